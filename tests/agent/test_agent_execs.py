"""The exec op: one program to completion, outside sessions."""
from __future__ import annotations

import pytest

from tumbler.agent.protocol import AgentRequestError


def execute(agent, stdin=b"", **args):
    result, body = agent.call("exec", args, stdin)
    n = result["stdout_len"]
    return result, body[:n], body[n:]


def test_argv_runs_without_a_shell(agent):
    result, out, err = execute(agent, argv=["printf", "%s|", "a b", "$HOME"])
    assert (result["exit_code"], out, err) == (0, b"a b|$HOME|", b"")


def test_command_string_splits_stdout_and_stderr(agent):
    result, out, err = execute(agent, command="echo out; echo err >&2; exit 7")
    assert (result["exit_code"], out, err) == (7, b"out\n", b"err\n")
    assert result["stdout_size"] == 4 and result["stderr_size"] == 4
    assert not result["stdout_truncated"] and not result["stderr_truncated"]


def test_stdin_env_and_cwd(agent, tmp_path):
    result, out, _ = execute(agent, stdin=b"\x00\xffdata", argv=["cat"])
    assert out == b"\x00\xffdata"
    big = bytes(range(256)) * 4096  # 1 MiB: more than a pipe holds, written while reading
    assert execute(agent, stdin=big, argv=["cat"])[1] == big
    _, out, _ = execute(agent, command='echo "$X"; pwd', env={"X": "y"}, cwd=str(tmp_path))
    assert out == f"y\n{tmp_path}\n".encode()


def test_timeout_kills_the_process_group(agent):
    result, out, _ = execute(agent, command="echo started; sleep 30", timeout=0.3)
    assert result["timed_out"] and result["exit_code"] is None and out == b"started\n"


def test_output_cap_per_stream(agent):
    result, out, err = execute(agent, command="head -c 3000 /dev/zero; echo e >&2", max_output=1000)
    assert len(out) == 1000 and result["stdout_truncated"] and result["stdout_size"] == 3000
    assert err == b"e\n" and not result["stderr_truncated"]


def test_background_descendant_does_not_hold_the_reply(agent):
    result, out, _ = execute(agent, command="sleep 30 & echo $!", timeout=10)
    assert result["exit_code"] == 0 and result["duration_s"] < 5
    agent.call("proc.signal", {"pid": int(out), "signal": "KILL"})


def test_missing_program_is_exit_127_like_a_shell(agent):
    result, out, err = execute(agent, argv=["/no/such/program"])
    assert result["exit_code"] == 127 and b"/no/such/program" in err and out == b""


@pytest.mark.parametrize("args", [
    {},
    {"argv": ["true"], "command": "true"},
    {"argv": []},
    {"argv": "true"},
    {"argv": ["true"], "cwd": "/no/such/dir"},
    {"argv": ["true"], "timeout": None},
    {"argv": ["true"], "env": {"A=B": "c"}},
])
def test_bad_requests_are_invalid(agent, args):
    with pytest.raises(AgentRequestError) as e:
        agent.call("exec", args)
    assert e.value.kind == "invalid"
