"""Anthropic's Messages API in OpenAI's chat form and back, so an owner sees one form.

A call that came in as `POST /v1/messages` reaches the owner as a chat.completions request
(`ModelCall.api == "anthropic"`, the original under `ModelCall.native_request`); the owner's
chat.completion (text, tool calls) goes back to the program as an Anthropic message object.

    system (text or text blocks)          -> a "system" message first
    user text / text blocks               -> "user" message
    user tool_result blocks               -> one "tool" message each (tool_call_id = tool_use_id)
    assistant text + tool_use blocks      -> "assistant" message with content and tool_calls
    tools [{name, description, input_schema}] -> [{type: function, function: {..., parameters}}]
    max_tokens, temperature, top_p, top_k, stop_sequences (-> stop), stream, tool_choice, model

Images and documents become a short text placeholder; thinking blocks are dropped.
"""
from __future__ import annotations

import json
import uuid

_STOP_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens",
                 "content_filter": "refusal"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


def to_openai(request: dict) -> dict:
    """A Messages API request as a chat.completions request."""
    messages: list[dict] = []
    system = _text_of(request.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in request.get("messages", []):
        messages.extend(_messages_of(message))
    out: dict = {"model": request.get("model") or "policy", "messages": messages}
    for key in ("max_tokens", "temperature", "top_p", "top_k", "stream", "metadata"):
        if key in request:
            out[key] = request[key]
    if request.get("stop_sequences"):
        out["stop"] = request["stop_sequences"]
    if request.get("tools"):
        out["tools"] = [_tool_of(t) for t in request["tools"] if isinstance(t, dict)]
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        out["tool_choice"] = ({"type": "function", "function": {"name": choice.get("name")}}
                              if kind == "tool" else {"any": "required", "none": "none"}.get(kind, "auto"))
    return out


def from_openai(response: dict, model: str) -> dict:
    """An owner's chat.completion as an Anthropic message object."""
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": function.get("name"), "input": _arguments(function.get("arguments"))})
    usage = response.get("usage") or {}
    finish = choice.get("finish_reason") or ("tool_calls" if message.get("tool_calls") else "stop")
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": response.get("model") or model, "content": content,
            "stop_reason": _STOP_REASONS.get(finish, "end_turn"), "stop_sequence": None,
            "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                      "output_tokens": usage.get("completion_tokens", 0)}}


def error_of(status: int, body: dict) -> dict:
    """An OpenAI-style error body in Anthropic's shape."""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else str(body)
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"),
                                       "message": message or "error"}}


def _messages_of(message: dict) -> list[dict]:
    role, content = message.get("role"), message.get("content")
    if isinstance(content, str) or content is None:
        return [{"role": role, "content": content or ""}]
    texts, tool_calls, results = [], [], []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            tool_calls.append({"id": block.get("id"), "type": "function",
                               "function": {"name": block.get("name"),
                                            "arguments": json.dumps(block.get("input") or {})}})
        elif kind == "tool_result":
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                            "content": _text_of(block.get("content"))
                            + (" (error)" if block.get("is_error") else "")})
        elif kind in ("image", "document"):
            texts.append(f"[{kind}]")
    out = list(results)
    if texts or tool_calls or not results:
        turn: dict = {"role": role, "content": "\n".join(texts)}
        if tool_calls:
            turn["tool_calls"] = tool_calls
        out.append(turn)
    return out


def _tool_of(tool: dict) -> dict:
    return {"type": "function", "function": {"name": tool.get("name"),
                                             "description": tool.get("description", ""),
                                             "parameters": tool.get("input_schema") or {}}}


def _text_of(content) -> str:
    """Text of a string or a list of content blocks (the text blocks, joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text") or "" for b in content
                         if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _arguments(arguments) -> dict:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_value": value}
