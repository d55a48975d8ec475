"""One agent program's contract, and the task-runner agent that runs it through the model service.

    program = load_program("claude-code")            # programs/claude-code.toml, or a path
    agent = ProgramAgent(program, ScriptedOwner(table))
    run_tasks(load_tasks("devops"), agent, out_dir=Path("runs/cc"))

Install: the program's `install` lines (Dockerfile instructions: RUN, COPY from `programs/`,
ENV...) run `FROM` the task's image when the trial's image is made, with the host's network,
and are cached by step like any build; the agent runs later with the sandbox's network off.
Run: the prompt goes to `prompt_file` in the sandbox; `command` is a /bin/sh command line in
which `{prompt}` (the instruction, shell-quoted), `{prompt_file}`, `{model}` and `{workdir}`
are replaced. It starts as a model-service episode, so OPENAI_BASE_URL, OPENAI_API_KEY,
ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY point at the sandbox's endpoint; `env` adds to
them. Collected into the trial's folder: `trajectory.jsonl` (every model call of the episode,
the model service's recording), the program's output (in agent.log) and its `collect` files
under `files/`.
"""
from __future__ import annotations

import logging
import shlex
import tempfile
import time
import tomllib
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tumbler.errors import AlreadyExists, InvalidRequest, NotFound, TumblerError
from tumbler.tasks.agents import AgentOutcome

log = logging.getLogger(__name__)

PROGRAMS = Path(__file__).parent / "programs"
COLLECT_MAX_BYTES = 16 << 20      # per collected file
END_SLACK_S = 30.0                # seconds past the program's timeout to wait for its end record
PLACEHOLDERS = ("{prompt}", "{prompt_file}", "{model}", "{workdir}")


class AgentProgram(BaseModel):
    """An agent program: how to install it, start it, and what to keep of its run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    """The program's name (`--agent NAME`)."""
    description: str = ""
    api: str = Field("openai", pattern="^(openai|anthropic)$")
    """Which API the program calls: the owner sees every call in OpenAI's form either way."""
    install: list[str] = []
    """Dockerfile instructions run FROM the task's image at build time (COPY reads programs/)."""
    command: str
    """The /bin/sh command line that runs the program, with placeholders (see the module)."""
    env: dict[str, str] = {}
    """Extra environment for the program (the model service's URLs and keys come on top)."""
    cwd: str | None = None
    """Working directory; default: the task image's WORKDIR."""
    timeout_s: float | None = Field(None, gt=0)
    """Seconds the program may run; default: the task's agent timeout."""
    model: str = "policy"
    """The model name the program asks for ({model})."""
    prompt_file: str = "/logs/agent/prompt.txt"
    collect: list[str] = []
    """Files in the sandbox to copy into the trial's folder after the run (its own trajectory)."""

    @field_validator("command")
    @classmethod
    def _command(cls, v):
        if "{prompt}" not in v and "{prompt_file}" not in v:
            raise ValueError("the command must pass the task's prompt: use {prompt} or {prompt_file}")
        return v

    def render(self, prompt: str, workdir: str) -> str:
        """The command line for one run."""
        values = {"{prompt}": shlex.quote(prompt), "{prompt_file}": shlex.quote(self.prompt_file),
                  "{model}": shlex.quote(self.model), "{workdir}": shlex.quote(workdir)}
        out = self.command
        for key in PLACEHOLDERS:   # one pass each: a prompt holding "{model}" stays text
            out = out.replace(key, "\0" + key[1:-1] + "\0")
        for key, value in values.items():
            out = out.replace("\0" + key[1:-1] + "\0", value)
        return out

    def dockerfile(self, image: str) -> str:
        """The install build: FROM the task's image, then the install lines."""
        return "\n".join([f"FROM {image}", *self.install]) + "\n"


def shipped_programs() -> list[str]:
    return sorted(p.stem for p in PROGRAMS.glob("*.toml"))


def load_program(name_or_path: str | Path) -> AgentProgram:
    """A shipped program by name, or a program TOML file; errors name the file and field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROGRAMS / f"{name_or_path}.toml"
        if not path.is_file():
            raise NotFound(f"no agent program {name_or_path!r}; shipped: "
                           f"{', '.join(shipped_programs())}")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequest(f"{path}: {exc}") from None
    try:
        return AgentProgram.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
                             for e in exc.errors())
        raise InvalidRequest(f"{path}: {problems}") from None


def start_program(program: AgentProgram, bridge, sandbox, task, timeout_s: float) -> str:
    """Start `program` on `task` in `sandbox` (attached to the sync `bridge`) as a model-service
    episode: the prompt written to its prompt_file, the command rendered, its env and
    working directory; returns the episode id. It is killed after timeout_s seconds."""
    workdir = program.cwd or sandbox.info.spec.cwd
    sandbox.write_file(program.prompt_file, task.instruction)
    return bridge.start_episode(sandbox.id, program.render(task.instruction, workdir),
                                env=program.env, cwd=workdir, timeout_s=timeout_s)


class ProgramAgent:
    """A task-runner agent (`tumbler.tasks.agents.Agent`) that runs an AgentProgram.

    owner answers the program's model calls: `owner.answer(call)` for each `SyncModelCall`,
    or, when it has `upstream`, the bridge forwards them there (proxy mode).
    """

    def __init__(self, program: AgentProgram, owner, *, call_timeout_s: float = 300.0):
        self.program, self.owner, self.call_timeout_s = program, owner, call_timeout_s
        self.name = program.name

    def prepare_image(self, image: str, config, runtime, on_event=None):
        """The task's image with the program installed (built once per image, cached by step),
        kept by name (`agent-<program>-<key>`), so pruning the build cache leaves it."""
        if not self.program.install:
            return image, config
        from tumbler.runtime.dockerfile_images import build_dockerfile
        with tempfile.TemporaryDirectory(prefix="tumbler-agent-") as tmp:
            dockerfile = Path(tmp) / "Dockerfile"
            dockerfile.write_text(self.program.dockerfile(image))
            result = build_dockerfile(PROGRAMS, dockerfile=dockerfile, runtime=runtime,
                                      on_event=on_event)
            name = f"agent-{self.program.name}-{result.image.removeprefix('build.')[:16]}"
            if not runtime.images.exists(name):
                try:   # every step is cached now: this only names the result
                    build_dockerfile(PROGRAMS, dockerfile=dockerfile, runtime=runtime, name=name)
                except AlreadyExists:   # a trial beside this one named it first
                    pass
        return name, result.config

    def run(self, sandbox, task, timeout_s: float, log: IO[str]) -> AgentOutcome:
        from tumbler.modelservice import EpisodeEnded, ModelBridge, ModelCall
        timeout_s = self.program.timeout_s or timeout_s
        upstream = getattr(self.owner, "upstream", None)
        with ModelBridge(call_timeout_s=self.call_timeout_s, upstream=upstream,
                         models=(self.program.model,)) as bridge:
            bridge.attach(sandbox)
            episode = start_program(self.program, bridge, sandbox, task, timeout_s)
            ended = self._serve(bridge, episode, time.monotonic() + timeout_s + END_SLACK_S,
                                ModelCall, EpisodeEnded)
            trial_dir = Path(getattr(log, "name", "")).parent if getattr(log, "name", None) else None
            if trial_dir is not None:
                bridge.export_jsonl(trial_dir / "trajectory.jsonl")
        log.write(ended.output if ended else "")
        if trial_dir is not None:
            self._collect(sandbox, trial_dir / "files")
        if ended is None:
            return AgentOutcome(None, error="the program's end was never reported")
        log.write(f"\n[{self.name}: {ended.reason}, exit code {ended.exit_code}, "
                  f"{ended.duration_s} s]\n")
        if ended.reason == "timeout":
            return AgentOutcome(None, timed_out=True)
        if ended.reason != "exited":
            return AgentOutcome(None, error=f"the program ended: {ended.reason}")
        return AgentOutcome(ended.exit_code)

    def _serve(self, bridge, episode: str, deadline: float, call_type, ended_type):
        """Answer calls until the episode ends; None if the end never comes by the deadline."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = bridge.next_event(timeout_s=min(left, 60.0))
            except TimeoutError:
                continue
            if isinstance(event, call_type):
                try:
                    self.owner.answer(event)
                except Exception as exc:   # the owner's bug: the program sees an error, not a hang
                    log.exception("owner failed on call %s", event.call_id)
                    if not event.answered:
                        event.fail(f"the model owner failed: {exc}", status=500)
            elif isinstance(event, ended_type) and event.episode_id == episode:
                return event
        return None

    def _collect(self, sandbox, dest: Path) -> None:
        """Copy the program's own trajectory files out (capped; a missing one is skipped)."""
        for remote in self.program.collect:
            try:
                data = sandbox.read_bytes(remote, length=COLLECT_MAX_BYTES)
            except TumblerError as exc:
                log.info("not collected: %s: %s", remote, exc)
                continue
            dest.mkdir(parents=True, exist_ok=True)
            (dest / Path(remote).name).write_bytes(data)
