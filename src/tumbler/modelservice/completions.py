"""OpenAI's response shapes: a chat.completion from an owner's answer, and error bodies."""
from __future__ import annotations

import time
import uuid


def completion(text: str | None = None, *, model: str = "policy",
               tool_calls: list[dict] | None = None, finish_reason: str | None = None,
               usage: dict | None = None, token_ids: list[int] | None = None) -> dict:
    """A chat.completion object with one choice.

    finish_reason defaults to "tool_calls" when there are tool calls, else "stop". usage
    (tokens) defaults to what token_ids tell: completion_tokens = len(token_ids).
    """
    message: dict = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    out = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
           "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "message": message, "logprobs": None,
                        "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop")}]}
    if usage is None and token_ids is not None:
        usage = {"prompt_tokens": 0, "completion_tokens": len(token_ids),
                 "total_tokens": len(token_ids)}
    if usage is not None:
        out["usage"] = usage
    return out


def error_body(message: str, kind: str = "server_error", code: str | None = None) -> dict:
    """An error body as OpenAI sends it."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def first_text(response: dict | None) -> str | None:
    """The first choice's message content, or None."""
    try:
        return response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
