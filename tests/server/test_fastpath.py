"""The hot path's hand-made bytes against the reference ones: the command reply JSON against
CommandResult.wire_json's, the SDK's request bytes against an httpx.Request's."""
from __future__ import annotations

import json

import pytest

from tumbler import wire
from tumbler.models import CommandResult
from tumbler.sdk import core, transport
from tumbler.server.runframes import command_json

RESULTS = [
    CommandResult(output_bytes=b"hi\n", exit_code=0),
    CommandResult(output_bytes="é\x00\x1b[0m\"\\\u2028 ".encode() + b"\xff\xfe", exit_code=None,
                  timed_out=True, truncated=True, output_size=10 ** 12, duration_s=1e-05,
                  session_alive=False),
    CommandResult(output_bytes=b"", exit_code=-1, duration_s=12345678.123456789),
    CommandResult(output_bytes=b"\t\n\r", exit_code=255, duration_s=1e300),
    CommandResult(output_bytes=b"x", exit_code=3, duration_s=float("nan")),
]


@pytest.mark.parametrize("result", RESULTS)
@pytest.mark.parametrize("text", [True, False])
def test_command_json_is_the_models_document(result, text):
    reference = result.wire_json(text)
    assert command_json(result, text).decode() == reference or \
        json.loads(command_json(result, text)) == json.loads(reference)
    if result.duration_s == result.duration_s:     # NaN goes out as null, which no reader takes
        assert CommandResult.model_validate_json(command_json(result, text)).output_bytes == result.output_bytes


CALLS = [
    core.run("sb-1", "my sess/é", "echo hi", 5, None),
    core.run("sb-1", None, "echo ü", 5, 10),
    core.get("sb-1"), core.remove("sb-1"), core.lifecycle("sb-1", "stop"),
    core.read_bytes("sb-1", "/a b", 0, None), core.write_bytes("sb-1", "/x", b"abc", None, False),
]


@pytest.mark.parametrize("call", CALLS)
def test_raw_request_bytes_are_httpx_requests(call):
    builder = core.RequestBuilder("http://127.0.0.1:8040", "tok")
    request = builder.build(call)
    body = request.read()
    head, raw_body, host, port = builder.raw(call)
    assert head + raw_body == transport.request_head(request, len(body)) + body
    assert (host, port) == ("127.0.0.1", 8040)


def test_replies_from_a_newer_server_still_parse():
    """A field the server adds later (to the sandbox, its spec or its limits) is ignored by this
    SDK, not an error: replies are read leniently, requests strictly."""
    out = json.loads(wire.SandboxOut(id="a1", state="running", spec={"image": "debian"}, created=1.0,
                                     last_active=1.0, ttl_s=None, expires_at=None,
                                     runtime="process").model_dump_json())
    out["spec"]["future"], out["spec"]["limits"]["future"], out["future"] = [], 1, True
    parsed = core.get("a1").parse(core.Reply(200, json.dumps(out).encode()))
    assert (parsed.id, parsed.spec.image, parsed.spec.limits.memory) == ("a1", "debian", 512 << 20)
