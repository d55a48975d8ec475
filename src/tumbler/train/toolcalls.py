"""Tool calls in agent mode: the policy writes them as text, the program gets OpenAI `tool_calls`.

When an agent program's call offers `tools`, the policy's reply is read in the Hermes format
(what Qwen's and SmolLM2-family chat templates use):

    I will look first.
    <tool_call>
    {"name": "bash", "arguments": {"command": "ls /srv"}}
    </tool_call>

Each block whose JSON has a `name` the call offers and an object of `arguments` becomes one
entry of the answer's `tool_calls` (id `call_<hex>`, arguments as a JSON string); the text
before the first block is the message's content (None when empty). A block that does not parse,
or names a tool not offered, stays in the content as text. The tokens trained are the generated
ones either way: the program's next call, which repeats this answer, continues the episode's
sequence (messages are compared by `message_key`), so nothing is re-rendered.

Rendering a chat for the policy (a first call, or one that rewrote its history): assistant
messages with `tool_calls` are written back in the same text format (as the policy would have
generated them), and the offered tools are described in the system message in Qwen2.5's words,
unless the model's chat template renders `tools` itself (then it gets them).
"""
from __future__ import annotations

import json
import re
import uuid

BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{tools}\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>')


def tool_names(tools) -> set[str]:
    return {(t.get("function") or {}).get("name") for t in tools or () if isinstance(t, dict)} - {None}


def parse(text: str, tools) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) of a reply `text` to a call offering `tools` (see the module)."""
    offered = tool_names(tools)
    pieces, calls, at = [], [], 0
    for match in BLOCK.finditer(text):
        call = _call(match.group(1), offered)
        if call is not None:
            pieces.append(text[at:match.start()])
            at = match.end()
            calls.append(call)
    if not calls:
        return text, []
    pieces.append(text[at:])
    content = "\n".join(p.strip() for p in pieces if p.strip())
    return content or None, calls


def _call(body: str, offered: set[str]) -> dict | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in offered:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):      # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": data["name"], "arguments": json.dumps(arguments)}}


def as_text(message: dict) -> dict:
    """An assistant message with tool_calls as the policy writes it: content then the blocks
    (other messages, and None content, made plain text)."""
    content = _text(message.get("content"))
    calls = message.get("tool_calls") or []
    if message.get("role") != "assistant" or not calls:
        return {**message, "content": content}
    blocks = []
    for call in calls:
        fn = call.get("function") or {}
        blocks.append("<tool_call>\n" + json.dumps({"name": fn.get("name"),
                                                    "arguments": _arguments(fn.get("arguments"))})
                      + "\n</tool_call>")
    text = "\n".join([content, *blocks]) if content else "\n".join(blocks)
    return {"role": "assistant", "content": text}


def for_template(messages: list[dict], tools, template: str | None) -> tuple[list[dict], list | None]:
    """The messages to render with a chat template (and the `tools` to pass it, when the
    template renders them itself; else the preamble goes into the system message)."""
    out = [as_text(m) for m in messages]
    if not tools:
        return out, None
    if template and "tools" in template:
        return out, list(tools)
    described = TOOLS_PREAMBLE.format(tools="\n".join(
        json.dumps(t.get("function", t), sort_keys=False) for t in tools))
    if out and out[0].get("role") == "system":
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{described}"}
    else:
        out.insert(0, {"role": "system", "content": described})
    return out, None


def message_key(m: dict) -> tuple:
    """What identifies a message when a program's later call repeats it: role, text (None and
    "" alike), tool calls by id, name and arguments (as JSON values), tool_call_id and name;
    fields a client adds on its own (refusal, annotations) do not count."""
    calls = tuple((c.get("id"), (c.get("function") or {}).get("name"),
                   json.dumps(_arguments((c.get("function") or {}).get("arguments")), sort_keys=True))
                  for c in m.get("tool_calls") or ())
    return m.get("role"), _text(m.get("content")), calls, m.get("tool_call_id"), m.get("name")


def _arguments(arguments):
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments if arguments is not None else {}


def _text(content) -> str:
    if isinstance(content, list):      # OpenAI's content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""
