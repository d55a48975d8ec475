"""`ModelBridge`: the blocking shell over `AsyncModelBridge`, for owners without an event loop.

    with ModelBridge() as bridge:
        env = bridge.attach(sandbox)
        episode = bridge.start_episode(sandbox.id, ["python3", "agent.py"])
        while True:
            event = bridge.next_event(timeout_s=60)
            if isinstance(event, ModelCall):       # a SyncModelCall: respond blocks
                event.respond("\\\\boxed{50}")
            elif isinstance(event, EpisodeEnded) and event.episode_id == episode:
                break

The async core runs on an event loop in a daemon thread; each method hands it a coroutine and
waits for the result (with a timeout), so both shells share every line of bridge logic.
"""
from __future__ import annotations

import asyncio
import threading

from tumbler.modelservice.bridge import CONTROL_TIMEOUT_S, AsyncModelBridge
from tumbler.modelservice.events import EpisodeEnded, ModelCall, SandboxDetached
from tumbler.modelservice.recording import Trajectory

# Seconds past an operation's own wait before the shell gives up on the loop thread.
LOOP_SLACK_S = 5.0


class SyncModelCall(ModelCall):
    """The ModelCall a blocking `ModelBridge` hands out: the same fields and properties, and
    `isinstance(event, ModelCall)` holds; only respond and fail block instead of being awaited
    (see ModelCall for the arguments)."""

    def __init__(self, call: ModelCall, bridge: "ModelBridge"):
        self.call, self._sync = call, bridge
        self.sandbox_id, self.episode_id, self.call_id = call.sandbox_id, call.episode_id, call.call_id
        self.request, self.stream, self.received = call.request, call.stream, call.received
        self.api, self.native_request = call.api, call.native_request

    @property
    def answered(self) -> bool:
        return self.call.answered

    def respond(self, text: str | None = None, **kwargs) -> bool:
        return self._sync._run(self.call.respond(text, **kwargs), CONTROL_TIMEOUT_S)

    def fail(self, message: str, **kwargs) -> bool:
        return self._sync._run(self.call.fail(message, **kwargs), CONTROL_TIMEOUT_S)


class ModelBridge:
    """AsyncModelBridge's methods, blocking; keyword arguments are AsyncModelBridge's."""

    def __init__(self, **kwargs):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="model-bridge",
                                        daemon=True)
        self._thread.start()
        self.core = AsyncModelBridge(**kwargs)

    def attach(self, sandbox, *, port: int | None = None) -> dict[str, str]:
        """As AsyncModelBridge.attach: a LocalSandbox, a server's Sandbox, or an Endpoint."""
        kwargs = {} if port is None else {"port": port}
        return self._run(self.core.attach(sandbox, **kwargs), CONTROL_TIMEOUT_S)

    def detach(self, sandbox_id: str) -> None:
        self._run(self.core.detach(sandbox_id), CONTROL_TIMEOUT_S)

    def session_env(self, sandbox_id: str, episode_id: str | None = None) -> dict[str, str]:
        return self.core.session_env(sandbox_id, episode_id)

    def start_episode(self, sandbox_id: str, command: str | list[str], **kwargs) -> str:
        return self._run(self.core.start_episode(sandbox_id, command, **kwargs), CONTROL_TIMEOUT_S)

    def stop_episode(self, sandbox_id: str, episode_id: str) -> None:
        self._run(self.core.stop_episode(sandbox_id, episode_id), CONTROL_TIMEOUT_S)

    def wait_episode(self, sandbox_id: str, episode_id: str, timeout_s: float) -> EpisodeEnded:
        return self._run(self.core.wait_episode(sandbox_id, episode_id, timeout_s), timeout_s)

    def next_event(self, timeout_s: float) -> SyncModelCall | EpisodeEnded | SandboxDetached:
        """The next call (a ModelCall whose respond blocks: SyncModelCall) or end;
        TimeoutError after timeout_s seconds."""
        event = self._run(self.core.next_event(timeout_s), timeout_s)
        return SyncModelCall(event, self) if isinstance(event, ModelCall) else event

    def trajectories(self, *, ended_only: bool = False) -> list[Trajectory]:
        return self.core.trajectories(ended_only=ended_only)

    def export_jsonl(self, path, *, ended_only: bool = True) -> int:
        return self.core.export_jsonl(path, ended_only=ended_only)

    def forget_ended(self) -> int:
        return self._run(self.core.forget_ended(), CONTROL_TIMEOUT_S)

    def close(self) -> None:
        """Detach every sandbox, then stop the loop thread."""
        if not self._loop.is_running():
            return
        try:
            self._run(self.core.close(), CONTROL_TIMEOUT_S * 2)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(LOOP_SLACK_S)

    def __enter__(self) -> "ModelBridge":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, coro, timeout_s: float):
        """Run a coroutine on the loop thread and wait for it (timeout_s plus some slack)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s + LOOP_SLACK_S)
