"""Bash sessions over HTTP: state, timeouts, input, interrupt, streaming, disconnects."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from checks import IMAGE
from tumbler import Sandbox
from tumbler.errors import AlreadyExists, Conflict, NotFound


@pytest.fixture
def sb(api):
    return Sandbox(IMAGE, client=api)


def test_sessions_keep_state_apart(sb):
    a = sb.session("a")
    b = sb.session("b", env={"WHO": "b"}, cwd="/tmp")
    a.run("cd /etc && f() { echo f:$1; }")
    assert a.run("pwd; f x").output == "/etc\nf:x\n"
    assert b.run("echo $WHO $PWD").output == "b /tmp\n"
    assert sorted(s["name"] for s in sb.sessions()) == ["a", "b"]
    with pytest.raises(AlreadyExists):
        sb.session("a")
    a.close()
    with pytest.raises((Conflict, NotFound)):
        a.run("true")
    r = b.run("printf 'a\\xffb'; (exit 7)")
    assert (r.output_bytes, r.exit_code) == (b"a\xffb", 7)


def test_timeout_keeps_the_session(sb):
    s = sb.session("t")
    s.run("export KEEP=yes")
    r = s.run("sleep 30", timeout=0.5)
    assert r.timed_out and r.exit_code is None
    assert s.run("echo $KEEP").output == "yes\n"


def test_input_answers_read(sb):
    s = sb.session("in")
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", s.run("read x; echo got:$x", timeout=20)))
    t.start()
    time.sleep(0.3)
    s.input("hello\n")
    t.join(20)
    assert "got:hello" in box["r"].output


def test_interrupt_stops_a_command(sb):
    s = sb.session("int")
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", s.run("sleep 60", timeout=60)))
    t.start()
    time.sleep(0.3)
    assert s.interrupt() is True
    t.join(20)
    assert box["r"].exit_code != 0
    assert s.run("echo after").output == "after\n"


def test_streamed_output_arrives_while_running(sb):
    arrivals = []
    r = sb.session("st").run("for i in 1 2 3; do echo $i; sleep 0.2; done",
                             on_output=lambda chunk: arrivals.append((time.monotonic(), chunk)))
    assert r.output == "1\n2\n3\n" and r.exit_code == 0
    assert b"".join(c for _, c in arrivals) == b"1\n2\n3\n"
    assert arrivals[-1][0] - arrivals[0][0] > 0.3     # chunks came over time, not at the end
    assert sb.run("echo x", on_output=lambda c: None).output == "x\n"   # default session, streamed


def test_client_disconnect_interrupts_and_session_lives(sb, server):
    """A client that hangs up mid-command: the server interrupts it; the session stays usable."""
    s = sb.session("dc")
    s.run("export STATE=kept")
    headers = {"authorization": f"Bearer {sb.client._http.headers['authorization'].split()[1]}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/sandboxes/{sb.id}/sessions/dc/run",
                   json={"command": "sleep 60"}, headers=headers, timeout=0.5)
    deadline = time.monotonic() + 10
    while True:   # the interrupt lands within moments of the hang-up
        try:
            r = s.run("echo $STATE", timeout=10)
            break
        except Conflict:
            assert time.monotonic() < deadline, "session still busy 10 s after the client left"
            time.sleep(0.1)
    assert r.output == "kept\n"
    # the same after a streamed run is dropped
    with httpx.stream("POST", f"{server.url}/v1/sandboxes/{sb.id}/sessions/dc/run/stream",
                      json={"command": "echo start; sleep 60"}, headers=headers, timeout=10) as resp:
        next(resp.iter_raw())
    deadline = time.monotonic() + 10
    while True:
        try:
            assert s.run("echo again", timeout=10).output == "again\n"
            break
        except Conflict:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_default_session_comes_back_after_exit(sb):
    sb.run("export GONE=1")
    r = sb.run("exit 3")
    assert not r.session_alive
    assert sb.run("echo ${GONE:-fresh}").output == "fresh\n"   # a new default session
    named = sb.session("mine")
    named.run("exit")
    with pytest.raises(Conflict):                                 # named sessions are the caller's
        named.run("true")
