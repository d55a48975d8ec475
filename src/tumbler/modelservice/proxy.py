"""Proxy mode: answer a sandbox's calls with an upstream OpenAI-compatible server's answers.

    bridge = AsyncModelBridge(upstream=Upstream("http://127.0.0.1:8000/v1"))

The upstream is always asked without streaming (the sandbox's endpoint streams the whole answer
to a program that asked for it), so the recording holds the complete response. vLLM's
`token_ids` and OpenAI's `logprobs.content` are recorded when the upstream sends them.
"""
from __future__ import annotations

import httpx

from tumbler.modelservice.completions import error_body


class Upstream:
    """An OpenAI-compatible server: base_url ends in /v1; model, when set, replaces the
    program's model name; timeout_s: seconds for one completion."""

    def __init__(self, base_url: str, *, api_key: str | None = None, model: str | None = None,
                 timeout_s: float = 300.0, max_connections: int = 64):
        self.base_url, self.model = base_url.rstrip("/"), model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections))

    async def complete(self, request: dict) -> tuple[int, dict, list[int] | None, list[float] | None]:
        """(status, body, token_ids, logprobs) of the upstream's answer; errors become 502s."""
        body = {k: v for k, v in request.items() if k not in ("stream", "stream_options")}
        if self.model:
            body["model"] = self.model
        try:
            reply = await self._client.post("/chat/completions", json=body)
        except httpx.HTTPError as e:
            return 502, error_body(f"upstream {self.base_url} failed: {type(e).__name__}: {e}",
                                   "upstream_error", "upstream_unreachable"), None, None
        try:
            data = reply.json()
        except ValueError:
            data = None
        if reply.status_code >= 400 or not isinstance(data, dict):
            if isinstance(data, dict) and "error" in data:
                return reply.status_code, data, None, None
            return 502, error_body(f"upstream {self.base_url} answered {reply.status_code} "
                                   "without a JSON error body", "upstream_error",
                                   "upstream_bad_answer"), None, None
        return 200, data, *_tokens(data)

    async def aclose(self) -> None:
        await self._client.aclose()


def _tokens(data: dict) -> tuple[list[int] | None, list[float] | None]:
    """The first choice's token ids (vLLM's return_token_ids) and logprobs, when present."""
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        return None, None
    token_ids = choice.get("token_ids")
    content = (choice.get("logprobs") or {}).get("content")
    logprobs = [t.get("logprob") for t in content] if isinstance(content, list) else None
    return token_ids, logprobs
