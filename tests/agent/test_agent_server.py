"""The agent as a server: health, processes, bad frames, handler errors, the client's errors."""
from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from tumbler.agentclient.blocking import AgentClient, AgentGone
from tumbler.agent.protocol import PROTOCOL_VERSION, AgentRequestError, read_frame, send_frame


def test_health(agent):
    agent.session("healthy")
    result, _ = agent.call("health")
    assert result["version"] == PROTOCOL_VERSION and result["pid"] == agent.proc.pid
    assert "healthy" in result["sessions"] and result["uptime_s"] >= 0


def test_proc_list_and_signal(agent):
    result, body = agent.call("exec", {"command": "sleep 30 & echo $!"})
    pid = int(body[:result["stdout_len"]])
    procs = {p["pid"]: p for p in agent.call("proc.list")[0]["processes"]}
    assert procs[pid]["cmd"] == "sleep 30" and procs[pid]["ppid"] == agent.proc.pid
    assert procs[pid]["rss_bytes"] > 0
    agent.call("proc.signal", {"pid": pid, "signal": "TERM"})
    end = time.monotonic() + 3
    while time.monotonic() < end and pid in {p["pid"] for p in agent.call("proc.list")[0]["processes"]}:
        time.sleep(0.01)
    assert pid not in {p["pid"] for p in agent.call("proc.list")[0]["processes"]}
    for bad in [1, 0, -5, agent.proc.pid]:
        with pytest.raises(AgentRequestError) as e:
            agent.call("proc.signal", {"pid": bad, "signal": "KILL"})
        assert e.value.kind == "invalid"
    with pytest.raises(AgentRequestError) as e:
        agent.call("proc.signal", {"pid": pid, "signal": "NOPE"})
    assert e.value.kind == "invalid"


def raw_connection(agent) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(agent.path)
    return sock


def test_bad_frames_do_not_disturb_other_connections(agent):
    s = agent.session("steady")
    agent.run(s, "export KEEP=1")
    bad = raw_connection(agent)
    head = b"{not json"
    bad.sendall(struct.pack(">II", len(head), 0) + head)
    header, _ = read_frame(bad)
    assert header["ok"] is False and header["error"]["kind"] == "invalid"
    send_frame(bad, {"id": 1, "op": "no.such.op"})
    assert read_frame(bad)[0]["error"]["kind"] == "invalid"
    send_frame(bad, {"id": 2, "op": "health", "args": [1]})
    assert read_frame(bad)[0]["error"]["kind"] == "invalid"
    bad.sendall(struct.pack(">II", 1 << 30, 1 << 31))  # framing broken: the agent hangs up
    assert bad.recv(1) == b""
    bad.close()
    assert agent.run(s, "echo $KEEP")[1] == b"1\n"


def test_one_connection_carries_concurrent_requests(agent):
    s = agent.session("multiplexed")
    conn = raw_connection(agent)
    send_frame(conn, {"id": 10, "op": "session.run", "args": {"name": s, "command": "sleep 0.3; echo slow"}})
    send_frame(conn, {"id": 11, "op": "health"})
    first, _ = read_frame(conn)
    second, body = read_frame(conn)
    assert (first["id"], second["id"], body) == (11, 10, b"slow\n")
    conn.close()


def test_handler_error_is_internal_and_the_agent_keeps_serving(agent, tmp_path):
    path = str(tmp_path / "f")
    agent.call("file.write", {"path": path}, b"x")
    with pytest.raises(AgentRequestError) as e:
        agent.call("file.chmod", {"path": path, "mode": 1 << 70})
    assert e.value.kind == "internal" and "OverflowError" in e.value.message
    assert agent.call("health")[0]["pid"] == agent.proc.pid


def test_client_timeout_and_gone(agent, tmp_path):
    s = agent.session("slowpoke")
    with pytest.raises(TimeoutError):
        agent.call("session.run", {"name": s, "command": "sleep 30"}, timeout=0.2)
    agent.call("session.interrupt", {"name": s})
    assert agent.run(s, "echo back")[1] == b"back\n"
    with pytest.raises(AgentGone):
        AgentClient(str(tmp_path / "no.sock")).call("health")


def test_client_is_safe_from_many_threads(agent):
    from concurrent.futures import ThreadPoolExecutor

    def session_worker(i):
        name = agent.session(f"pool-{i}")
        outs = [agent.run(name, f"echo {i}-{j}")[1] for j in range(10)]
        agent.call("session.close", {"name": name})
        return outs

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(session_worker, range(8)))
    assert results == [[f"{i}-{j}\n".encode() for j in range(10)] for i in range(8)]


def test_shutdown_closes_sessions_and_exits(tmp_path):
    from agentproc import start_agent

    other = start_agent(tmp_path)
    try:
        other.session("s")
        bash_pid = other.call("session.list")[0]["sessions"][0]["pid"]
        other.call("shutdown")
        assert other.proc.wait(5) == 0
        assert not os.path.exists(f"/proc/{bash_pid}") or b"Z" in open(f"/proc/{bash_pid}/stat", "rb").read()
    finally:
        other.client.close()
        other.proc.kill()
        other.proc.wait()
