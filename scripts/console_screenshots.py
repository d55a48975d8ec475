"""The screenshots in docs/console/: a real server, real sandboxes, the runs in ./runs, Debian's
chromium. Run as root from the repository: `.venv/bin/python scripts/console_screenshots.py`
(a trainer run in ./runs first makes the training views worth looking at: `make demo`)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from tumbler.sdk import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_console import serve  # noqa: E402  (the benchmark's server starter)

OUT = Path("docs/console")
TOKEN = "screenshot-token"
PORT = 8047
URL = f"http://127.0.0.1:{PORT}"


def stage(client: Client) -> list:
    """A few sandboxes at work, one stopped, and a warm pool."""
    made = [client.create("debian", labels={"job": "eval", "team": "search"}, memory="1g"),
            client.create("debian", labels={"job": "eval", "team": "search"}),
            client.create("debian", labels={"job": "train", "run": "guess"}, cpus=2),
            client.create("debian", labels={"job": "debug"}, memory="256m")]
    made[-1].stop()
    work = made[0]
    work.write_file("/root/task.py", "import sys\nprint('solving', sys.argv[1:])\n")
    work.run("cd /root && git init -q repo && python3 task.py 1 2 3")
    work.exec(["sh", "-c", "nohup python3 -c 'import time; time.sleep(3600)' >/dev/null 2>&1 &"])
    client.set_pool("small", 2, "debian", memory="256m")
    return made


def shoot(page, name: str, full: bool = False) -> None:
    page.wait_for_timeout(1500)     # a few samples of live stats, the last event rendered
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full)
    print("wrote", OUT / f"{name}.png")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as state:
        server = serve(Path(state), PORT, TOKEN, "--runs-dir", "runs")
        client = Client(URL, TOKEN)
        made = []
        try:
            made = stage(client)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(URL + "/ui/")
                page.fill("#token", TOKEN)
                page.click("#login-form button")
                page.wait_for_selector(f"tr[data-id='{made[0].id}']")
                shoot(page, "sandboxes")
                page.goto(URL + "/ui/#/sandboxes/" + made[0].id)
                page.wait_for_timeout(10_000)      # ten samples of live stats
                page.click("#terminal")
                page.keyboard.type("cd /root/repo && git status && python3 ../task.py x y && ls -la /root\n")
                page.wait_for_timeout(2000)
                shoot(page, "sandbox-terminal", full=True)
                page.click(".tabs button[data-tab='Console']")
                for line in ["cd /root/repo && ls -la", "python3 ../task.py a b", "uname -sr; nproc"]:
                    page.fill("#console-in", line)
                    page.press("#console-in", "Enter")
                    expect(page.locator("#console-status")).to_have_text("idle")
                shoot(page, "sandbox-console", full=True)
                page.click(".tabs button[data-tab='Processes']")
                page.wait_for_selector("#process-table td:has-text('time.sleep')")
                shoot(page, "sandbox-processes", full=True)
                page.click(".tabs button[data-tab='Files']")
                page.click("#file-table >> text=task.py")
                page.wait_for_selector("#file-content")
                shoot(page, "sandbox-files", full=True)
                page.goto(URL + "/ui/#/pools")
                page.wait_for_selector("#pool-table tr[data-pool='small']")
                expect(page.locator("#pool-table tr[data-pool='small']")).to_contain_text("2 / 2", timeout=60_000)
                shoot(page, "pools")
                page.goto(URL + "/ui/#/nodes")
                shoot(page, "nodes")
                runs = httpx.get(URL + "/v1/runs", headers={"authorization": f"Bearer {TOKEN}"}).json()["runs"]
                page.goto(URL + "/ui/#/runs")
                shoot(page, "runs")
                if runs:
                    page.goto(URL + "/ui/#/runs/" + runs[0]["name"])
                    page.wait_for_selector(".turn.assistant")
                    shoot(page, "run", full=True)
                tasks = httpx.get(URL + "/v1/task-runs", headers={"authorization": f"Bearer {TOKEN}"}).json()["runs"]
                if tasks:
                    page.goto(URL + "/ui/#/tasks/" + tasks[0]["name"])
                    page.wait_for_selector("#trial-table tbody tr button")
                    page.locator("#trial-table tbody tr").first.get_by_role("button", name="verifier").click()
                    page.wait_for_selector("#trial-log-text")
                    shoot(page, "task-run", full=True)
                browser.close()
        finally:
            for sb in made:
                sb.remove()
            for pool in client.pools():
                client.remove_pool(pool.name)
            client.close()
            server.terminate()
            server.wait(60)


if __name__ == "__main__":
    main()
