"""The model service: an OpenAI-compatible endpoint inside sandboxes, answered by an owner.

An agent program in a sandbox calls `OPENAI_BASE_URL` (served by the sandbox's agent, see
`tumbler.agent.modelhost`) as if it were a hosted LLM; each call reaches the owner of the
sandbox (a trainer, an evaluator) through a `ModelBridge`, or an upstream server in proxy mode,
and every exchange is recorded per episode for training.

Modules: `bridge.py` (AsyncModelBridge, the core), `sync.py` (ModelBridge, its blocking shell),
`endpoints.py` (how the bridge reaches one sandbox: LocalEndpoint), `events.py` (ModelCall,
EpisodeEnded, SandboxDetached), `completions.py` (OpenAI response shapes), `recording.py`
(trajectories, JSONL), `proxy.py` (Upstream). Imports: tumbler.agent (client side), tumbler.errors,
tumbler.local, tumbler.runtime.spec, httpx.
"""
from tumbler.modelservice.bridge import AsyncModelBridge
from tumbler.modelservice.completions import completion
from tumbler.modelservice.endpoints import Endpoint, LocalEndpoint
from tumbler.modelservice.events import EpisodeEnded, ModelCall, SandboxDetached
from tumbler.modelservice.proxy import Upstream
from tumbler.modelservice.recording import Exchange, Trajectory
from tumbler.modelservice.sync import ModelBridge, SyncModelCall

__all__ = ["AsyncModelBridge", "Endpoint", "EpisodeEnded", "Exchange", "LocalEndpoint",
           "ModelBridge", "ModelCall", "SandboxDetached", "SyncModelCall", "Trajectory", "Upstream",
           "completion"]
