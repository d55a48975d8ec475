"""`AsyncModelBridge`: calls from the model endpoints of many sandboxes, delivered to one owner.

    bridge = AsyncModelBridge()
    await bridge.attach(sandbox)          # a LocalSandbox, a server's Sandbox, or an Endpoint
    episode = await bridge.start_episode(sandbox.id, ["python3", "/root/agent.py"])
    async for event in bridge.events():
        if isinstance(event, ModelCall):
            await event.respond("\\boxed{50}", token_ids=[...], logprobs=[...])
        elif isinstance(event, EpisodeEnded): ...
    bridge.export_jsonl("trajectories.jsonl")

One task per attached sandbox long-polls its agent (`model.next`); calls of every sandbox land
in one queue, so any number of them can be in flight at once and answered in any order. With
an `Upstream`, the bridge answers each call itself by forwarding it (proxy mode) and the event
stream carries only episode and sandbox ends. Either way every exchange is recorded.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from typing import AsyncIterator

from tumbler.agent.modelhost import API_KEY, DEFAULT_PORT
from tumbler.errors import CommandTimeout, Conflict, InvalidRequest, NotFound, TumblerError
from tumbler.modelservice import anthropic
from tumbler.modelservice.completions import error_body
from tumbler.modelservice.endpoints import Endpoint, endpoint_for, unpack_calls
from tumbler.modelservice.events import EpisodeEnded, ModelCall, SandboxDetached
from tumbler.modelservice.proxy import Upstream
from tumbler.modelservice.recording import Exchange, Trajectory, write_jsonl

log = logging.getLogger(__name__)

CONTROL_TIMEOUT_S = 30.0      # seconds for enable, respond, start, stop
POLL_SLACK_S = 30.0           # seconds on top of a long-poll's own wait before it counts as lost
MAX_BATCH = 256               # calls one long-poll may bring back
_EPISODE_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_DEFAULT_EPISODE = "default"  # calls to plain /v1, from programs not started as episodes


class _Attached:
    """A sandbox the bridge serves: its endpoint, its port and its poll task."""

    def __init__(self, endpoint: Endpoint, port: int, owner: int):
        self.endpoint, self.port, self.owner = endpoint, port, owner
        self.task: asyncio.Task | None = None
        self.closing = False
        self.detached = False
        # Episode ids are the owner's names; what a program inside sees in its URL is a token
        # of ours, unguessable, new at each start. Calls are attributed by the token alone, so
        # one program cannot write into another's trajectory nor squat an id before its start.
        self.episode_of: dict[str, str] = {}    # token -> episode id
        self.token_of: dict[str, str] = {}      # episode id -> token

    def issue_token(self, episode_id: str) -> str:
        old = self.token_of.pop(episode_id, None)
        if old is not None:
            self.episode_of.pop(old, None)
        token = "t" + secrets.token_hex(16)
        self.episode_of[token], self.token_of[episode_id] = episode_id, token
        return token


class AsyncModelBridge:
    """Serves the model endpoints of many sandboxes; see the module docstring.

    call_timeout_s: seconds an agent program's call waits for an answer before it gets a 504.
    poll_s: seconds one long-poll waits in the agent (shorter makes detach quicker).
    upstream: answer calls by forwarding them there instead of delivering them (proxy mode).
    """

    def __init__(self, *, call_timeout_s: float = 300.0, poll_s: float = 10.0,
                 models: tuple[str, ...] = ("policy",), upstream: Upstream | None = None):
        self.call_timeout_s, self.poll_s, self.models = call_timeout_s, poll_s, models
        self.upstream = upstream
        self._sandboxes: dict[str, _Attached] = {}
        self._trajectories: dict[tuple[str, str], Trajectory] = {}
        self._pending: dict[tuple[str, str], tuple[ModelCall, Exchange]] = {}
        self._waiters: dict[tuple[str, str], asyncio.Future] = {}
        self._events: asyncio.Queue = asyncio.Queue()
        self._forwards: set[asyncio.Task] = set()
        self._closed = False

    # -- sandboxes ------------------------------------------------------------------------------

    async def attach(self, sandbox, *, port: int = DEFAULT_PORT) -> dict:
        """Turn on the sandbox's endpoint and serve it; returns the env for its sessions.

        sandbox: a LocalSandbox, a server's tumbler.Sandbox or AsyncSandbox, or an Endpoint.

        port: where the endpoint listens in the sandbox (0: any free port, for sandboxes that
        share the host's network).
        """
        if self._closed:
            raise Conflict("the bridge is closed")
        endpoint = endpoint_for(sandbox)
        if endpoint.sandbox_id in self._sandboxes:
            raise Conflict(f"sandbox {endpoint.sandbox_id} is attached already")
        result, _ = await endpoint.call("model.enable", {
            "port": port, "call_timeout": self.call_timeout_s, "models": list(self.models)},
            timeout=CONTROL_TIMEOUT_S)
        attached = _Attached(endpoint, result["port"], result["owner"])
        self._sandboxes[endpoint.sandbox_id] = attached
        attached.task = asyncio.create_task(self._poll(attached), name=f"poll-{endpoint.sandbox_id}")
        return self.session_env(endpoint.sandbox_id)

    async def detach(self, sandbox_id: str) -> None:
        """Stop serving a sandbox: its waiting calls get 503, its episodes end as "detached"."""
        attached = self._attached(sandbox_id)
        attached.closing = True   # the poll that disable ends is ours, not another owner's doing
        try:
            await attached.endpoint.call("model.disable", {}, timeout=CONTROL_TIMEOUT_S)
        except TumblerError as e:
            log.info("sandbox %s: disable failed while detaching: %s", sandbox_id, e)
        await self._lose(attached, "detached", "detached by the owner")

    def session_env(self, sandbox_id: str, episode_id: str | None = None) -> dict[str, str]:
        """OPENAI_BASE_URL, OPENAI_API_KEY, ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY for a
        program in this sandbox (and episode)."""
        attached = self._attached(sandbox_id)
        path = "/v1"
        if episode_id:
            token = attached.token_of.get(_check_episode(episode_id))
            if token is None:   # an episode the owner runs itself: declared here
                token = attached.issue_token(episode_id)
                self._trajectory(sandbox_id, episode_id)
            path = f"/episodes/{token}/v1"
        root = f"http://127.0.0.1:{attached.port}{path[:-3]}"
        return {"OPENAI_BASE_URL": root + "/v1", "OPENAI_API_KEY": API_KEY,
                "ANTHROPIC_BASE_URL": root, "ANTHROPIC_API_KEY": API_KEY}

    # -- episodes -------------------------------------------------------------------------------

    async def start_episode(self, sandbox_id: str, command: str | list[str], *,
                            episode_id: str | None = None, env: dict[str, str] | None = None,
                            cwd: str | None = None, timeout_s: float = 3600.0) -> str:
        """Start an agent program in the sandbox as an episode; returns the episode id.

        command: argv, or a string for /bin/sh -c. The program is killed after timeout_s
        seconds (a hung agent); its end arrives as an EpisodeEnded event either way.
        """
        attached = self._attached(sandbox_id)
        episode_id = _check_episode(episode_id or f"ep-{uuid.uuid4().hex[:12]}")
        key = (sandbox_id, episode_id)
        if key in self._trajectories and not self._trajectories[key].ended:
            raise Conflict(f"episode {episode_id} of sandbox {sandbox_id} is running")
        args = {"episode": attached.issue_token(episode_id), "env": env or {}, "cwd": cwd,
                "timeout": timeout_s, "argv" if isinstance(command, list) else "command": command}
        self._trajectories[key] = Trajectory(sandbox_id, episode_id)
        await attached.endpoint.call("model.start", args, timeout=CONTROL_TIMEOUT_S)
        return episode_id

    async def stop_episode(self, sandbox_id: str, episode_id: str) -> None:
        """Kill the episode's program; its EpisodeEnded (reason "stopped") follows."""
        attached = self._attached(sandbox_id)
        token = attached.token_of.get(episode_id)
        if token is None:
            raise NotFound(f"no episode {episode_id} in sandbox {sandbox_id}")
        await attached.endpoint.call("model.stop", {"episode": token}, timeout=CONTROL_TIMEOUT_S)

    async def wait_episode(self, sandbox_id: str, episode_id: str, timeout_s: float) -> EpisodeEnded:
        """The episode's end; TimeoutError if it runs past timeout_s seconds from now."""
        key = (sandbox_id, episode_id)
        trajectory = self._trajectories.get(key)
        if trajectory is None:
            raise NotFound(f"no episode {episode_id} in sandbox {sandbox_id}")
        if trajectory.ended:
            return _ended_event(trajectory)
        future = self._waiters.get(key)
        if future is None:
            future = self._waiters[key] = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(asyncio.shield(future), timeout_s)

    # -- the owner's side -----------------------------------------------------------------------

    async def next_event(self, timeout_s: float) -> ModelCall | EpisodeEnded | SandboxDetached:
        """The next call or end; TimeoutError if none comes within timeout_s seconds."""
        return await asyncio.wait_for(self._events.get(), timeout_s)

    async def events(self, idle_timeout_s: float | None = None) -> AsyncIterator:
        """Calls and ends as they come, until the bridge closes (or nothing came for
        idle_timeout_s seconds)."""
        while not self._closed:
            try:
                event = await asyncio.wait_for(self._events.get(), idle_timeout_s or self.poll_s)
            except asyncio.TimeoutError:
                if idle_timeout_s is not None:
                    return
                continue
            yield event

    async def calls(self, idle_timeout_s: float | None = None) -> AsyncIterator[ModelCall]:
        """Only the calls of `events()` (ends are still recorded and wake `wait_episode`)."""
        async for event in self.events(idle_timeout_s):
            if isinstance(event, ModelCall):
                yield event

    def trajectories(self, *, ended_only: bool = False) -> list[Trajectory]:
        """Every episode seen, in the order each began."""
        return [t for t in self._trajectories.values() if t.ended or not ended_only]

    def export_jsonl(self, path, *, ended_only: bool = True) -> int:
        """Write the trajectories as JSONL (one episode a line); returns how many."""
        return write_jsonl(self.trajectories(ended_only=ended_only), path)

    async def forget_ended(self) -> int:
        """Drop the trajectories of ended episodes (a trainer that has read them: a long run
        would otherwise keep every call it ever answered); returns how many."""
        ended = [key for key, t in self._trajectories.items() if t.ended]
        for key in ended:
            del self._trajectories[key]
        return len(ended)

    async def close(self) -> None:
        """Detach every sandbox (their waiting calls get 503) and stop forwarding."""
        if self._closed:
            return
        for sandbox_id in list(self._sandboxes):
            await self.detach(sandbox_id)
        self._closed = True
        for task in list(self._forwards):
            task.cancel()
        if self.upstream is not None:
            await self.upstream.aclose()

    async def __aenter__(self) -> "AsyncModelBridge":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- inside ---------------------------------------------------------------------------------

    def _attached(self, sandbox_id: str) -> _Attached:
        attached = self._sandboxes.get(sandbox_id)
        if attached is None:
            raise NotFound(f"sandbox {sandbox_id} is not attached to this bridge")
        return attached

    async def _poll(self, attached: _Attached) -> None:
        """Long-poll one sandbox until it is detached or lost."""
        while not attached.detached:
            try:
                result, body = await attached.endpoint.call(
                    "model.next", {"owner": attached.owner, "timeout": self.poll_s,
                                   "max_calls": MAX_BATCH},
                    timeout=self.poll_s + POLL_SLACK_S)
            except CommandTimeout:
                continue
            except TumblerError as e:
                if not (attached.detached or attached.closing):
                    await self._lose(attached, "sandbox_gone", str(e))
                return
            if attached.detached or attached.closing:
                return
            if result.get("stale"):
                await self._lose(attached, "detached", "another owner enabled its endpoint")
                return
            self._absorb(attached.endpoint.sandbox_id, result, body)

    def _absorb(self, sandbox_id: str, result: dict, body: bytes) -> None:
        now = time.monotonic()
        for meta in unpack_calls(result, body):
            self._arrive(sandbox_id, meta, now)
        for call_id in result.get("expired", []):
            self._close_call(sandbox_id, call_id, 504, error_body(
                f"no answer within {self.call_timeout_s:g} s", "timeout", "model_timeout"))
        attached = self._sandboxes.get(sandbox_id)
        for record in result.get("ended", []):
            episode_id = attached and attached.episode_of.get(record.get("episode"))
            if episode_id is None:
                continue   # not an episode this owner started: nothing of ours ended
            self._end(sandbox_id, episode_id, record.get("exit_code"), record.get("reason", "exited"),
                      record.get("duration_s"), str(record.get("output", "")))

    def _arrive(self, sandbox_id: str, meta: dict, now: float) -> None:
        episode_id = self._episode_of_call(sandbox_id, meta)
        if episode_id is None:
            return
        request, native, api = meta["request"], None, meta.get("api") or "openai"
        if api == "anthropic":
            request, native = anthropic.to_openai(request), request
        call = ModelCall(sandbox_id, episode_id, meta["call_id"], request,
                         meta.get("stream", False), now, self, api=api, native_request=native)
        exchange = Exchange(call.call_id, call.request, api=api, native_request=native)
        self._trajectory(sandbox_id, episode_id).exchanges.append(exchange)
        self._pending[(sandbox_id, call.call_id)] = (call, exchange)
        if self.upstream is not None:
            task = asyncio.create_task(self._forward(call))
            self._forwards.add(task)
            task.add_done_callback(self._forwards.discard)
        else:
            self._events.put_nowait(call)

    def _episode_of_call(self, sandbox_id: str, meta: dict) -> str | None:
        """The episode a call belongs to, by its URL's token; None (and a 403 to the caller)
        for a token this owner never issued: such a call is recorded nowhere."""
        token = meta.get("episode")
        if not token:
            return _DEFAULT_EPISODE
        attached = self._sandboxes.get(sandbox_id)
        episode_id = attached.episode_of.get(token) if attached is not None else None
        if episode_id is None and attached is not None:
            log.info("sandbox %s: refused call %s for an episode token never issued",
                     sandbox_id, meta.get("call_id"))
            body = json.dumps(error_body("no such episode: start it through the bridge first",
                                         "invalid_request_error", "unknown_episode")).encode()
            task = asyncio.create_task(attached.endpoint.call(
                "model.respond", {"call_id": meta["call_id"], "status": 403}, body,
                timeout=CONTROL_TIMEOUT_S))
            self._forwards.add(task)
            task.add_done_callback(_quiet_done(self._forwards))
        return episode_id

    async def _answer(self, call: ModelCall, status: int, body: dict, token_ids, logprobs) -> bool:
        """Send an owner's answer to the waiting program and record it (ModelCall.respond)."""
        entry = self._pending.pop((call.sandbox_id, call.call_id), None)
        attached = self._sandboxes.get(call.sandbox_id)
        if entry is None or attached is None:
            return False
        exchange = entry[1]
        exchange.response, exchange.status = body, status
        exchange.token_ids, exchange.logprobs = token_ids, logprobs
        exchange.latency_s = round(time.monotonic() - call.received, 6)
        wire = body
        if call.api == "anthropic":
            wire = exchange.native_response = (
                anthropic.from_openai(body, call.request.get("model") or "policy")
                if status < 400 else anthropic.error_of(status, body))
        try:
            result, _ = await attached.endpoint.call(
                "model.respond", {"call_id": call.call_id, "status": status},
                json.dumps(wire, separators=(",", ":")).encode(), timeout=CONTROL_TIMEOUT_S)
        except TumblerError as e:
            log.info("sandbox %s: answer to %s not delivered: %s", call.sandbox_id, call.call_id, e)
            result = {}
        if not result.get("delivered"):
            exchange.status = 504
            exchange.response = error_body("the answer came too late: the call had expired or "
                                           "its episode had ended", "timeout", "answer_too_late")
            return False
        return True

    async def _forward(self, call: ModelCall) -> None:
        """Proxy mode: answer a call with the upstream's answer (or its error)."""
        status, body, token_ids, logprobs = await self.upstream.complete(call.request)
        if not call.answered:
            call.answered = True
            await self._answer(call, status, body, token_ids, logprobs)

    def _close_call(self, sandbox_id: str, call_id: str, status: int, body: dict) -> None:
        """A call that ended without an answer from the owner (expired, episode or sandbox gone)."""
        entry = self._pending.pop((sandbox_id, call_id), None)
        if entry is not None:
            exchange = entry[1]
            exchange.status, exchange.response = status, body
            exchange.latency_s = round(time.monotonic() - entry[0].received, 6)

    def _end(self, sandbox_id: str, episode_id: str, exit_code, reason: str, duration_s,
             output: str) -> None:
        trajectory = self._trajectory(sandbox_id, episode_id)
        if trajectory.ended:
            return
        for (sid, call_id), (call, _) in list(self._pending.items()):
            if sid == sandbox_id and call.episode_id == episode_id:
                self._close_call(sid, call_id, 503, error_body(
                    f"the episode ended ({reason})", "unavailable", "episode_ended"))
        trajectory.exit_code, trajectory.reason = exit_code, reason
        trajectory.duration_s, trajectory.output = duration_s, output
        event = _ended_event(trajectory)
        future = self._waiters.pop((sandbox_id, episode_id), None)
        if future is not None and not future.done():
            future.set_result(event)
        self._events.put_nowait(event)

    async def _lose(self, attached: _Attached, reason: str, why: str) -> None:
        """Forget a sandbox: close its calls and episodes, tell the owner, release its endpoint."""
        if attached.detached:
            return
        attached.detached = True
        sandbox_id = attached.endpoint.sandbox_id
        self._sandboxes.pop(sandbox_id, None)
        log.info("sandbox %s detached: %s", sandbox_id, why)
        for (sid, call_id) in [k for k in self._pending if k[0] == sandbox_id]:
            self._close_call(sid, call_id, 503, error_body(
                f"sandbox {sandbox_id} went away: {why}", "unavailable", reason))
        for t in [t for t in self._trajectories.values() if t.sandbox_id == sandbox_id]:
            if not t.ended:
                self._end(sandbox_id, t.episode_id, None, reason, None, "")
        self._events.put_nowait(SandboxDetached(sandbox_id, why))
        if attached.task is not None and attached.task is not asyncio.current_task():
            attached.task.cancel()   # its long-poll's answer, whenever it comes, goes nowhere
        await attached.endpoint.close()

    def _trajectory(self, sandbox_id: str, episode_id: str) -> Trajectory:
        key = (sandbox_id, episode_id)
        trajectory = self._trajectories.get(key)
        if trajectory is None:
            trajectory = self._trajectories[key] = Trajectory(sandbox_id, episode_id)
        return trajectory


def _quiet_done(tasks: set):
    """A done-callback that forgets the task and logs, rather than raises, its failure."""
    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("refusal not delivered: %s", task.exception())
    return done


def _check_episode(episode_id: str) -> str:
    if not _EPISODE_RE.match(episode_id):
        raise InvalidRequest(f"bad episode id {episode_id!r}: 1-128 letters, digits, '.', '_', '-'")
    return episode_id


def _ended_event(t: Trajectory) -> EpisodeEnded:
    return EpisodeEnded(t.sandbox_id, t.episode_id, t.exit_code, t.reason, t.duration_s, t.output)
