"""The web console at /ui in a real browser (Debian's chromium, driven by Playwright) against a
real server with real sandboxes: what the SDK made shows in the table, an action in the page
takes effect (checked through the SDK), the console shows a command's output, a bad token is
refused, and each view leaves a screenshot in tests/artifacts/console/."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from playwright.sync_api import expect

from checks import IMAGE
from server_process import TOKEN, ServerProcess, leftovers_after, sweep

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
WAIT_MS = 20_000      # longest a page waits for something to appear, milliseconds
expect.set_options(timeout=WAIT_MS)


def write_run(runs: Path) -> None:
    """A training run as the trainer writes it, through the trainer's own RunDir."""
    from tumbler.train.rundir import RunDir
    run = RunDir(str(runs / "guess-demo"), tensorboard=False)   # the console reads the JSONL
    run.write_config(SimpleNamespace(model_dump=lambda: {"model": {"name": "tiny"}, "steps": 6}))
    run.log("eval", {"step": 0, "success_rate": 0.1, "reward_mean": -0.2})
    for step in range(1, 7):
        run.log("metrics", {"step": step, "reward_mean": -0.3 + 0.15 * step, "success_rate": 0.1 * step,
                            "turns_mean": 3 - 0.1 * step, "generation_s": 5.0, "env_s": 0.02,
                            "update_s": 3.5, "step_s": 8.6, "tokens_per_s": 60 + step, "loss": 0.01})
    run.log("eval", {"step": 6, "success_rate": 0.7, "reward_mean": 0.8})
    episode = SimpleNamespace(seed=7, reward=1.0, success=True, turns=2, error=None,
                              transcript=[{"role": "user", "content": "Guess 1-4."},
                                          {"role": "assistant", "content": "\\boxed{2}"},
                                          {"role": "user", "content": "higher"},
                                          {"role": "assistant", "content": "\\boxed{3}"},
                                          {"role": "user", "content": "<b>Correct!</b>"}])
    run.write_episodes(6, [episode])


def trial(task_id: str, trial: int, passed: bool, **extra) -> str:
    """One line of a task run's results.jsonl, through the task runner's own model."""
    from tumbler.tasks.trial import TrialResult
    return TrialResult(task_id=task_id, trial=trial, agent="oracle", reward=float(passed),
                       passed=passed, seconds=2.5, agent_seconds=2.0, verifier_seconds=0.5,
                       started=time.time(), **extra).model_dump_json() + "\n"


def write_task_run(runs: Path) -> None:
    """A task run as `tumbler tasks run --out` leaves it: results.jsonl, trials/<task>/<k>/ logs."""
    out = runs / "tasks-demo"
    for task_id, k in (("fix-nginx", 0), ("fix-nginx", 1), ("count-lines", 0)):
        (out / "trials" / task_id / str(k)).mkdir(parents=True)
    (out / "trials" / "fix-nginx" / "0" / "agent.log").write_text(
        "$ nginx -t\nsyntax is ok\n<script>alert(1)</script>\n")
    (out / "trials" / "fix-nginx" / "0" / "verifier.log").write_text("PASSED test_outputs.py::test_nginx\n")
    from tumbler.modelservice.recording import Exchange, Trajectory, write_jsonl
    ask = {"messages": [{"role": "system", "content": "You fix servers."},
                        {"role": "user", "content": "nginx fails to start"}]}
    answer = {"choices": [{"message": {"role": "assistant", "content": "checking <i>config</i>",
                                       "tool_calls": [{"function": {"name": "bash",
                                                                    "arguments": '{"cmd": "nginx -t"}'}}]}}]}
    write_jsonl([Trajectory(sandbox_id="s1", episode_id="e1", exit_code=0, reason="exited",
                            duration_s=3.0, exchanges=[Exchange(call_id="c1", request=ask, response=answer,
                                                                status=200, latency_s=0.4)])],
                out / "trials" / "fix-nginx" / "0" / "trajectory.jsonl")
    (out / "results.jsonl").write_text(
        trial("fix-nginx", 0, True) + trial("count-lines", 0, True)
        + trial("fix-nginx", 1, False, error="agent_timeout", reason="the agent ran past 60 s"))


@pytest.fixture(scope="module")
def console_server(runtime, tmp_path_factory):
    state = tmp_path_factory.mktemp("console")
    write_run(state / "runs")
    write_task_run(state / "runs")
    srv = ServerProcess(state, runs_dir=str(state / "runs"), reap_interval_s=1.0).start()
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make system)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def client(console_server, runtime):
    c = console_server.client()
    yield c
    for pool in c.pools():
        c.remove_pool(pool.name)
    sweep(c, runtime, c.made)
    c.close()


@pytest.fixture
def page(browser, console_server):
    """A signed-in page (the token typed into the prompt, as a user would)."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(console_server.url + "/ui/")
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    yield page
    context.close()
    assert errors == []


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)    # let the last event render
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def row(page, sandbox_id: str):
    return page.locator(f"#sandbox-table tr[data-id='{sandbox_id}']")


def test_bad_token_is_refused(browser, console_server, client):
    sb = client.create(IMAGE, labels={"who": "bad-token-test"})
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(console_server.url + "/ui/")
    assert page.locator("#login").is_visible()          # a token is needed, and asked for
    page.fill("#token", "not-the-token")
    page.click("#login-form button")
    expect(page.locator("#login-msg")).to_contain_text("wrong bearer token")
    assert page.locator("#login").is_visible()
    assert page.locator(f"tr[data-id='{sb.id}']").count() == 0
    shot(page, "login-refused")
    context.close()
    # the page's files are open, the data is not
    assert httpx.get(console_server.url + "/ui/console.js").status_code == 200
    assert httpx.get(console_server.url + "/v1/events").status_code == 401
    assert httpx.get(console_server.url + "/ui/../v1/sandboxes").status_code in (401, 404)
    sb.remove()


def test_table_lists_what_the_sdk_made_and_filters(page, client):
    a = client.create(IMAGE, labels={"job": "eval", "team": "a"}, memory="256m")
    b = client.create(IMAGE, labels={"job": "train"})
    b.stop()
    page.goto(page.url.split("#")[0] + "#/sandboxes")
    row(page, a.id).wait_for()
    row(page, b.id).wait_for()
    assert "running" in row(page, a.id).inner_text() and "256 MiB" in row(page, a.id).inner_text()
    assert "job=eval" in row(page, a.id).inner_text()
    expect(row(page, a.id)).to_contain_text(socket.gethostname())     # the node it is on
    shot(page, "sandboxes")
    for width, height in ((1024, 640), (2560, 1440)):      # a small laptop, a wide monitor
        page.set_viewport_size({"width": width, "height": height})
        assert page.evaluate("document.documentElement.scrollWidth") <= width   # no sideways page
        shot(page, f"sandboxes-{width}")
    page.set_viewport_size({"width": 1440, "height": 900})
    page.fill("#filter-label", "job=train")
    page.press("#filter-label", "Enter")
    row(page, a.id).wait_for(state="detached")
    assert row(page, b.id).is_visible()
    page.fill("#filter-label", "")
    page.press("#filter-label", "Enter")
    page.select_option("#filter-state", "running")
    row(page, b.id).wait_for(state="detached")
    assert row(page, a.id).is_visible()
    page.select_option("#filter-state", "")
    page.select_option("#filter-node", socket.gethostname())
    assert row(page, a.id).is_visible() and row(page, b.id).is_visible()
    page.select_option("#filter-node", "")
    # an SDK change streams in without a reload
    c = client.create(IMAGE, labels={"job": "late"})
    row(page, c.id).wait_for()


def test_page_actions_take_effect(page, client, runtime):
    sb = client.create(IMAGE, labels={"job": "actions"})
    sb.write_file("/root/scratch.txt", "to be reset away")
    page.goto(page.url.split("#")[0] + "#/sandboxes")
    row(page, sb.id).get_by_role("button", name="reset").click()
    page.wait_for_selector("#toast.show")
    assert "/root/scratch.txt" not in [f.path for f in sb.list_dir("/root")]
    row(page, sb.id).get_by_role("button", name="stop").click()
    _until(lambda: sb.refresh().state == "stopped")
    row(page, sb.id).get_by_role("button", name="start").wait_for()
    row(page, sb.id).get_by_role("button", name="start").click()
    _until(lambda: sb.refresh().state == "running")
    row(page, sb.id).get_by_role("button", name="remove").click()   # the confirm is accepted
    _until(lambda: sb.id not in [s.id for s in client.list()])
    assert leftovers_after(runtime, sb.id) == []


def test_sandbox_console_files_processes(page, client, tmp_path):
    sb = client.create(IMAGE, labels={"job": "console"})
    sb.run("echo from-the-sdk > /root/hello.txt")
    page.goto(page.url.split("#")[0] + "#/sandboxes/" + sb.id)
    page.wait_for_selector(".stats .meter")                     # live stats arrived
    fill, meter = page.locator(".stats .meter-fill").first, page.locator(".stats .meter").first
    assert fill.bounding_box()["width"] < 0.5 * meter.bounding_box()["width"]   # ~10 of 512 MiB
    page.click(".tabs button[data-tab='Console']")
    page.fill("#console-in", "echo console-says-$((6*7)); ls /root")
    page.press("#console-in", "Enter")
    expect(page.locator("#console-out")).to_contain_text("console-says-42")
    expect(page.locator("#console-out")).to_contain_text("exit 0")
    assert "hello.txt" in page.inner_text("#console-out")
    # what a sandbox prints is text, never markup
    page.fill("#console-in", "echo '<img src=x onerror=alert(1)><b>bold</b>'")
    page.press("#console-in", "Enter")
    expect(page.locator("#console-out")).to_contain_text("<b>bold</b>")
    assert page.locator("#console-out img, #console-out b").count() == 0
    # a line typed while a command runs is its input
    page.fill("#console-in", "read answer; echo got-$answer")
    page.press("#console-in", "Enter")
    expect(page.locator("#console-status")).to_have_text("running")
    page.fill("#console-in", "blue")
    page.press("#console-in", "Enter")
    expect(page.locator("#console-out")).to_contain_text("got-blue")
    # state carries over between lines, as in one bash session
    assert sb.run("echo $answer").output.strip() == "blue"
    shot(page, "sandbox-console")

    page.click(".tabs button[data-tab='Sessions']")
    page.click("#session-table tr:has-text('default') >> text=recent output")
    expect(page.locator("#session-history")).to_contain_text("console-says-42")
    shot(page, "sandbox-sessions")

    sb.exec(["sh", "-c", "sleep 300 & echo started"])
    page.click(".tabs button[data-tab='Processes']")
    page.wait_for_selector("#process-table td:has-text('sleep 300')")
    shot(page, "sandbox-processes")
    page.locator("#process-table tr:has-text('sleep 300')").get_by_role("button", name="KILL").click()
    _until(lambda: not any("sleep 300" in p.cmd for p in sb.processes()))

    page.click(".tabs button[data-tab='Files']")
    page.click("#file-table >> text=hello.txt")
    expect(page.locator("#file-content")).to_contain_text("from-the-sdk")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"\x00\x01uploaded from the page\xff")
    page.set_input_files("#file-upload", str(upload))
    page.wait_for_selector("#file-table >> text=upload.bin")
    assert sb.read_bytes("/root/upload.bin") == upload.read_bytes()
    with page.expect_download() as got:
        page.locator("#file-table tr:has-text('hello.txt')").get_by_role("button", name="download").click()
    assert Path(got.value.path()).read_bytes() == b"from-the-sdk\n"
    shot(page, "sandbox-files")


def test_live_terminal(page, client):
    sb = client.create(IMAGE, labels={"job": "terminal"})
    page.goto(page.url.split("#")[0] + "#/sandboxes/" + sb.id)
    expect(page.locator("#terminal-status")).to_contain_text("bash, pid")
    rows = page.locator("#terminal .xterm-rows")
    expect(rows).to_contain_text("#")                          # the prompt
    page.click("#terminal")
    page.keyboard.type("echo term-$((6*7)); tty\n")
    expect(rows).to_contain_text("term-42")
    expect(rows).to_contain_text("/dev/pts/")                  # a real terminal, not a pipe
    page.keyboard.type("sleep 600\n")
    sleeping = lambda: any(p.cmd == "sleep 600" for p in sb.processes())
    _until(sleeping)
    page.keyboard.press("Control+C")                           # ^C reaches the foreground job
    _until(lambda: not sleeping())
    page.keyboard.type("echo after-interrupt\n")
    expect(rows).to_contain_text("after-interrupt")
    shot(page, "sandbox-terminal")
    shells = lambda: [p for p in sb.processes() if p.cmd.startswith("/bin/bash -l")]
    assert len(shells()) == 1
    page.goto(page.url.split("#")[0] + "#/sandboxes")            # leaving hangs the terminal up
    _until(lambda: shells() == [])


def test_pool_resized_from_the_page(page, client, console_server):
    client.set_pool("small", 1, IMAGE, memory="256m")
    page.goto(page.url.split("#")[0] + "#/pools")
    pool_row = page.locator("#pool-table tr[data-pool='small']")
    pool_row.wait_for()
    pool_row.locator("input.pool-size").fill("2")
    pool_row.get_by_role("button", name="resize").click()
    _until(lambda: [p.size for p in client.pools() if p.name == "small"] == [2])
    pools = _get(console_server, "/v1/pools").json()["pools"]
    assert [p["spec"]["limits"]["memory"] for p in pools] == [256 << 20]  # the spec is kept
    expect(pool_row).to_contain_text("2 / 2", timeout=60_000)
    shot(page, "pools")
    page.goto(page.url.split("#")[0] + "#/nodes")
    page.wait_for_selector(".card .meter")
    expect(page.locator(".card").first).to_contain_text("process")   # the node's backend
    shot(page, "nodes")


def test_training_run_view(page):
    page.goto(page.url.split("#")[0] + "#/runs")
    page.wait_for_selector("#run-table >> text=guess-demo")
    assert "0.1 → 0.7" in page.inner_text("#run-table")
    shot(page, "runs")
    page.click("#run-table >> text=guess-demo")
    page.wait_for_selector("svg.chart polyline")
    ticks = page.locator("svg.chart text.tick").all_text_contents()
    assert {"0", "3", "6"} <= set(ticks)                     # whole numbers keep their zeros
    page.wait_for_selector(".turn.assistant.trained")
    # what the run wrote is shown as text, never as HTML
    assert page.locator(".turn .content b").count() == 0
    assert "<b>Correct!</b>" in page.inner_text("#episodes")
    expect(page.locator("#run-config")).to_contain_text("steps: 6")
    shot(page, "run")


def test_task_run_view(page, console_server):
    page.goto(page.url.split("#")[0] + "#/tasks")
    page.click("#task-run-table >> text=tasks-demo")
    expect(page.locator("#task-table tr[data-task='fix-nginx']")).to_contain_text("1 / 2")
    expect(page.locator("#task-table tr[data-task='count-lines']")).to_contain_text("1 / 1")
    page.locator("#trial-table tr[data-trial='fix-nginx/0']").get_by_role("button", name="agent").click()
    expect(page.locator("#trial-log-text")).to_contain_text("syntax is ok")
    assert page.locator("#trial-log script").count() == 0
    page.locator("#trial-table tr[data-trial='fix-nginx/0']").get_by_role("button", name="trajectory").click()
    expect(page.locator("#trial-log")).to_contain_text("nginx fails to start")
    expect(page.locator("#trial-log .turn.trained")).to_contain_text('bash({"cmd": "nginx -t"})')
    assert page.locator("#trial-log i").count() == 0
    expect(page.locator("#trial-table tr[data-trial='fix-nginx/1']")).to_contain_text("agent_timeout")
    # a trial the runner finishes now streams in
    with open(Path(console_server.config["runs_dir"]) / "tasks-demo" / "results.jsonl", "a") as f:
        f.write(trial("count-lines", 1, False, error="verifier_error", reason="tests failed"))
    expect(page.locator("#task-table tr[data-task='count-lines']")).to_contain_text("1 / 2")
    shot(page, "task-run")


def test_trial_logs_stay_inside_their_run(console_server, tmp_path):
    base = "/v1/task-runs/tasks-demo/trials"
    assert _get(console_server, f"{base}/fix-nginx/0/verifier").json()["text"].startswith("PASSED")
    assert _get(console_server, f"{base}/fix-nginx/0/secret").status_code == 400
    assert _get(console_server, f"{base}/..%2F..%2F..%2Fetc/0/agent").status_code in (400, 404)
    assert _get(console_server, f"{base}/fix-nginx/7/agent").status_code == 404
    episodes = _get(console_server, f"{base}/fix-nginx/0/trajectory").json()["episodes"]
    assert episodes[0]["exchanges"][0]["latency_s"] == 0.4
    assert _get(console_server, f"{base}/count-lines/0/trajectory").status_code == 404
    outside = tmp_path / "host-file"
    outside.write_text("host secret")
    link = Path(console_server.config["runs_dir"]) / "tasks-demo" / "trials" / "count-lines" / "0" / "agent.log"
    link.symlink_to(outside)
    try:
        assert _get(console_server, f"{base}/count-lines/0/agent").status_code == 404
    finally:
        link.unlink()
    runs = _get(console_server, "/v1/task-runs").json()["runs"]
    assert [(r["name"], r["tasks"]) for r in runs] == [("tasks-demo", 2)]
    with console_server.client() as client:
        assert [r.name for r in client.task_runs()] == ["tasks-demo"]
        assert [r.name for r in client.runs()] == ["guess-demo"]


def _until(check, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the page's action did not take effect in time")
        time.sleep(0.1)


# -- the routes the console reads, through plain HTTP ------------------------------------------

def _get(server, path: str, **kw) -> httpx.Response:
    return httpx.get(server.url + path, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30, **kw)


def test_runs_route_reads_only_inside_the_runs_dir(console_server, tmp_path):
    runs = Path(console_server.config["runs_dir"])
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (secret / "config.yaml").write_text("password: hunter2\n")
    (secret / "metrics.jsonl").write_text('{"step": 1}\n')
    (runs / "escape").symlink_to(secret)
    try:
        assert [r["name"] for r in _get(console_server, "/v1/runs").json()["runs"]] == ["guess-demo"]
        assert _get(console_server, "/v1/runs/escape/config").status_code == 404
        assert _get(console_server, "/v1/runs/..%2F..%2Fetc/config").status_code in (400, 404)
        assert _get(console_server, "/v1/runs/.hidden").status_code == 400
    finally:
        (runs / "escape").unlink()
    page = _get(console_server, "/v1/runs/guess-demo/metrics", params={"after": 4}).json()
    assert [r["step"] for r in page["records"]] == [5, 6] and page["next"] == 6
    assert _get(console_server, "/v1/runs/guess-demo/episodes/999").status_code == 404
    # a line the trainer is still writing is left for the next read, not an error
    with open(runs / "guess-demo" / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "rew')
    try:
        assert _get(console_server, "/v1/runs/guess-demo").json()["steps"] == 6
    finally:
        path = runs / "guess-demo" / "metrics.jsonl"
        path.write_text(path.read_text().rsplit("\n", 1)[0] + "\n")


def test_session_history_is_bounded_and_goes_with_reset(console_server, client):
    sb = client.create(IMAGE)
    for i in range(25):
        sb.run(f"echo line-{i}")
    sb.run("head -c 10000 /dev/zero | tr '\\0' x")
    entries = _get(console_server, f"/v1/sandboxes/{sb.id}/sessions/default/history").json()["entries"]
    assert len(entries) == 20 and entries[0]["command"] == "echo line-6"
    assert [e.command for e in sb.history()] == [e["command"] for e in entries]   # the SDK's view
    import base64
    assert entries[-1]["output_size"] == 10000
    assert base64.b64decode(entries[-1]["output_tail_b64"]) == b"x" * 4096
    sb.reset()
    assert _get(console_server, f"/v1/sandboxes/{sb.id}/sessions/default/history").json() == {"entries": []}
    assert _get(console_server, "/v1/sandboxes/nope/sessions/default/history").status_code == 404


def test_events_stream_sends_state_and_stats(console_server, client):
    assert _get(console_server, "/v1/events", params={"sandbox": "nope"}).status_code == 404
    assert _get(console_server, "/v1/events", params={"run": "nope"}).status_code == 404
    sb = client.create(IMAGE, labels={"job": "events"})
    seen: dict[str, int] = {}
    with httpx.stream("GET", console_server.url + "/v1/events",
                      params={"sandbox": sb.id, "run": "guess-demo", "interval": 0.2},
                      headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                seen[line[7:]] = seen.get(line[7:], 0) + 1
            if seen.get("stats", 0) >= 3:
                break
    assert {"sandboxes", "pools", "nodes", "stats", "sessions", "processes", "run", "metrics"} <= set(seen)
    assert seen["sandboxes"] == 1 and seen["metrics"] == 1   # unchanged parts are not sent again
    t = time.monotonic()
    with httpx.stream("GET", console_server.url + "/v1/events", params={"max_s": 1},
                      headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as stream:
        assert "event: sandboxes" in list(stream.iter_lines())      # then it ends by itself
    assert time.monotonic() - t < 20


def test_watching_a_sandbox_does_not_keep_it_alive(console_server, client, runtime):
    import json
    sb = client.create(IMAGE, ttl=2)
    gone = False
    deadline = time.monotonic() + 20
    with httpx.stream("GET", console_server.url + "/v1/events", params={"sandbox": sb.id, "interval": 0.2},
                      headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif kind == "sandboxes" and line.startswith("data: "):
                if sb.id not in [s["id"] for s in json.loads(line[6:])["sandboxes"]]:
                    gone = True
                    break
            if time.monotonic() > deadline:
                break
    assert gone, "the idle TTL reaped nothing while the console watched"
    assert leftovers_after(runtime, sb.id) == []
