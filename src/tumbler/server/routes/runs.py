"""/v1/runs and /v1/task-runs: the trainer's and the task runner's run directories under the
server's runs dir, read-only."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request

from tumbler import wire
from tumbler.server.routes import json_response
from tumbler.server.runs import TASKS, RunStore

router = APIRouter(tags=["runs"])


def store(request: Request) -> RunStore:
    return request.app.state.runs


@router.get("/v1/runs", response_model=wire.TrainRunList)
async def list_runs(request: Request):
    """Runs newest first, each with its last metrics line and its evaluations."""
    runs = store(request)

    def summaries():
        return [runs.summary(name) for name in runs.names()]
    items = await asyncio.to_thread(summaries)
    return json_response(wire.TrainRunList(runs_dir=str(runs.root),
                                           runs=[wire.TrainRunOut(**s) for s in items]))


@router.get("/v1/runs/{name}", response_model=wire.TrainRunOut)
async def get_run(name: str, request: Request):
    return json_response(wire.TrainRunOut(**await asyncio.to_thread(store(request).summary, name)))


@router.get("/v1/runs/{name}/config", response_model=wire.TrainRunConfig)
async def run_config(name: str, request: Request):
    return wire.TrainRunConfig(config_yaml=await asyncio.to_thread(store(request).config_text, name))


@router.get("/v1/runs/{name}/metrics", response_model=wire.TrainRunMetrics)
async def run_metrics(name: str, request: Request,
                      after: int = Query(0, ge=0, description="skip this many lines (the "
                                                              "`next` of the previous answer)")):
    """metrics.jsonl from line `after` on: one record a step (reward, success, phase seconds...)."""
    records = await asyncio.to_thread(store(request).records, name, "metrics", after)
    return json_response(wire.TrainRunMetrics(records=records, next=after + len(records)))


@router.get("/v1/runs/{name}/episodes/{step}", response_model=wire.TrainEpisodes)
async def run_episodes(name: str, step: int, request: Request):
    """The episodes the trainer rendered at `step`, turn by turn."""
    episodes = await asyncio.to_thread(store(request).episodes, name, step)
    return json_response(wire.TrainEpisodes(step=step, episodes=episodes))


@router.get("/v1/task-runs", response_model=wire.TaskRunList)
async def list_task_runs(request: Request):
    """Task runs (folders with a results.jsonl) newest first, with their counts."""
    runs = store(request)

    def summaries():
        return [runs.task_summary(name) for name in runs.names(TASKS)]
    items = await asyncio.to_thread(summaries)
    return json_response(wire.TaskRunList(runs_dir=str(runs.root),
                                          runs=[wire.TaskRunOut(**s) for s in items]))


@router.get("/v1/task-runs/{name}/results", response_model=wire.TaskRunResults)
async def task_run_results(name: str, request: Request,
                           after: int = Query(0, ge=0, description="skip this many lines")):
    """results.jsonl from line `after` on: one finished trial a line."""
    records = await asyncio.to_thread(store(request).records, name, "results", after)
    return json_response(wire.TaskRunResults(records=records, next=after + len(records)))


@router.get("/v1/task-runs/{name}/trials/{task}/{trial}/trajectory", response_model=wire.TrialTrajectory)
async def trial_trajectory(name: str, task: str, trial: int, request: Request):
    """The trial's model calls as the model service recorded them (agents that call a model)."""
    episodes = await asyncio.to_thread(store(request).trial_trajectory, name, task, trial)
    return json_response(wire.TrialTrajectory(episodes=episodes))


@router.get("/v1/task-runs/{name}/trials/{task}/{trial}/{log}", response_model=wire.TrialLog)
async def trial_log(name: str, task: str, trial: int, log: str, request: Request):
    """The end of one trial's `agent` or `verifier` log."""
    data, size = await asyncio.to_thread(store(request).trial_log, name, task, trial, log)
    return json_response(wire.TrialLog(text=data.decode("utf-8", errors="replace"), size=size,
                                       truncated=len(data) < size))
