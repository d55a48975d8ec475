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

EXPECTED = {'/opt/webapp/server.py': 'a5e7431322c8e05ec1e658b3b711ff8ddde78b643612e762de335db2fd711cf5', '/opt/webapp/bin/healthcheck': 'dd62665ee750a01e54b81be1926044319048f7d93f7af187773736824003b40d', '/opt/webapp/bin/start': '9fd3db5a00833aae5da8aed6dc9ec35e9c6f6f1fe26ca30491e74d69f322948b'}
unchanged(EXPECTED)
import configparser
c = configparser.ConfigParser()
c.read("/etc/webapp/webapp.ini")
if not any(c.get(s, "workers", fallback=None) == "4" for s in c.sections()) \
        or c.get("health", "path", fallback=None) != "/healthz":
    fail("other settings changed")
subprocess.run(["/opt/webapp/bin/start"], timeout=30)
for _ in range(50):
    if subprocess.run(["/opt/webapp/bin/healthcheck"], timeout=30).returncode == 0:
        print("healthy")
        sys.exit(0)
    time.sleep(0.1)
fail("the health check still fails")
