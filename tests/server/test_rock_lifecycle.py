"""ROCK's life cycle beyond start/stop (restart, commit, archive and restore, list, batch,
state history, deadlines that outlive a server restart), with ROCK's real SDK where it has a
call for it (tests/server/rock_client.py) and plain HTTP where it has none."""
from __future__ import annotations

import time

import httpx
import pytest

from checks import IMAGE, wait_for
from server_process import TOKEN, ServerProcess, sweep
from test_rock_compat import PREFIX, needs_rock, raised, rock_server, run_client  # noqa: F401
from tumbler.runtime.images import ImageStore


@pytest.fixture(scope="module")
def lifecycle_run(rock_server):
    out = run_client("lifecycle", rock_server.url, TOKEN)
    try:
        yield out
    finally:
        if ImageStore().exists("tumbler-test-committed-1"):
            ImageStore().remove("tumbler-test-committed-1")


@needs_rock
def test_restart_keeps_files(lifecycle_run):
    assert lifecycle_run["start"] is None, lifecycle_run["start"]
    assert raised(lifecycle_run["restart_running"])            # stop it first
    assert lifecycle_run["restart"] is None, lifecycle_run["restart"]
    assert lifecycle_run["read_after_restart"]["content"] == "kept"


@needs_rock
def test_commit_makes_an_image(lifecycle_run):
    commit = lifecycle_run["commit"]
    assert commit["phase"] == "SUCCEEDED" and commit["image_tag"] == "tumbler-test-committed-1"
    assert lifecycle_run["commit_status"]["phase"] == "SUCCEEDED"
    assert ImageStore().exists("tumbler-test-committed-1")


@needs_rock
def test_archive_and_restore(lifecycle_run):
    assert raised(lifecycle_run["archive_running"])            # only a stopped sandbox
    assert lifecycle_run["archive"] is None, lifecycle_run["archive"]
    archived = lifecycle_run["status_archived"]
    assert archived["is_alive"] is False and archived["state"] == "archived"
    assert lifecycle_run["restart_archived"] is None, lifecycle_run["restart_archived"]
    assert lifecycle_run["read_after_restore"]["content"] == "kept"
    history = [(h["from_state"], h["to_state"], h["event"])
               for h in lifecycle_run["status_restored"]["state_history"]]
    assert ("stopped", "archived", "archive") in history
    assert ("archived", "running", "start") in history
    assert history[0] == ("pending", "running", "start")


@needs_rock
def test_list_pages_filters_and_batch(lifecycle_run):
    first, second = lifecycle_run["list_page1"], lifecycle_run["list_page2"]
    assert first["status"] == "Success" and first["result"]["total"] == 2
    assert first["result"]["has_more"] is True and second["result"]["has_more"] is False
    ids = {first["result"]["items"][0]["sandbox_id"], second["result"]["items"][0]["sandbox_id"]}
    assert ids == {lifecycle_run["sandbox_id"], lifecycle_run["other_id"]}
    assert lifecycle_run["list_stopped"]["result"]["total"] == 0
    statuses = lifecycle_run["batch"]["result"]["statuses"]
    assert [s["sandbox_id"] for s in statuses] == [lifecycle_run["sandbox_id"],
                                                   lifecycle_run["other_id"]]   # unknown: left out
    assert lifecycle_run["delete"] is None and lifecycle_run["delete_other"] is None


def _post(srv, path: str, body: dict) -> dict:
    r = httpx.post(srv.url + PREFIX + path, json=body, timeout=60,
                   headers={"Authorization": f"Bearer {TOKEN}"})
    return r.json()


def _status(srv, sandbox_id: str) -> dict:
    return httpx.get(srv.url + PREFIX + "/get_status", params={"sandbox_id": sandbox_id},
                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()


def test_deadlines_outlive_a_server_restart(runtime, tmp_path):
    """auto_archive_seconds acts after a stop; auto_delete_seconds is kept in the registry and
    acted on by the next server when the first was killed before its deadline."""
    cfg = {"reap_interval_s": 0.2, "keep_sandboxes": True}
    srv = ServerProcess(tmp_path, **cfg).start()
    client = srv.client()
    a = d = {"sandbox_id": "none"}
    try:
        a = _post(srv, "/start_async", {"image": IMAGE, "auto_archive_seconds": 1})["result"]
        _post(srv, "/stop", {"sandbox_id": a["sandbox_id"]})
        wait_for(lambda: _status(srv, a["sandbox_id"])["result"]["state"] == "archived", 30,
                 "the archive deadline")
        d = _post(srv, "/start_async", {"image": IMAGE, "auto_delete_seconds": 3})["result"]
        _post(srv, "/stop", {"sandbox_id": d["sandbox_id"]})
        assert _status(srv, d["sandbox_id"])["result"]["auto_delete_time"]
        srv.kill()                                              # before the deadline
        srv = ServerProcess(tmp_path, **cfg).start()
        client.close()
        client = srv.client()
        assert _status(srv, a["sandbox_id"])["result"]["state"] == "archived"
        wait_for(lambda: _status(srv, d["sandbox_id"])["status"] == "Failed", 30,
                 "the delete deadline, after the restart")
        wait_for(lambda: d["sandbox_id"] not in {i.id for i in runtime.list()}, 30,
                 "the deleted sandbox to leave the runtime")
        restored = _post(srv, "/restart", {"sandbox_id": a["sandbox_id"]})
        assert restored["status"] == "Success", restored
        assert _status(srv, a["sandbox_id"])["result"]["is_alive"] is True
        _post(srv, "/delete", {"sandbox_id": a["sandbox_id"]})
        wait_for(lambda: not _archives(a["sandbox_id"]), 30, "the ROCK pass to remove its archive")
    finally:
        sweep(client, runtime, [])
        client.close()
        srv.terminate()
        for name in _archives(a["sandbox_id"]) + _archives(d["sandbox_id"]):
            ImageStore().remove(name)


def _archives(sandbox_id: str) -> list[str]:
    return sorted((i.name for i in ImageStore().list()
                   if i.name.startswith(f"archive-{sandbox_id}-")), reverse=True)
