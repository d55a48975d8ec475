import hashlib, os, subprocess, sys, time, urllib.request

def sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()

def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)

def unchanged(expected):
    for path, digest in expected.items():
        if not os.path.isfile(path) or os.path.islink(path) or sha(path) != digest:
            fail(f"{path} was changed or removed")

def get(url, tries=50):
    last = None
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status, r.read().decode()
        except Exception as exc:
            last = exc
            time.sleep(0.1)
    return None, str(last)

EXPECTED = {'/opt/app/server.py': '305a76591d9481e44a21f3c1c95162944079a2078533be075f9823d9c669d2cb', '/opt/app/bin/start-app': '99e978476e8cd063d87e74da94f3b29e004c20fe4b515c91543c8b272e5dea4e', '/etc/app/app.conf': '11a38c9b82ac1c97a361b2d8a8c85883683cca5bfa37c2fea70d1037fa572824'}
unchanged(EXPECTED)
r = subprocess.run(["/opt/app/bin/start-app"], capture_output=True, text=True, timeout=30)
if r.returncode != 0:
    fail("start-app failed: " + r.stderr)
status, body = get("http://127.0.0.1:8080/health")
if status != 200 or body != "ok":
    fail(f"health answered {status} {body!r}")
print("the service is back")
