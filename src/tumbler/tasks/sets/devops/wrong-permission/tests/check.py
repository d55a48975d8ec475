import hashlib, os, stat, subprocess, sys, time, urllib.request

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

EXPECTED = {'/opt/report/bin/make-report': 'e65a68ce3eb864118f6e551cb08bd0705f844a7ab04d4e0b630c3377eb772a56'}
unchanged(EXPECTED)
for path in ("/srv/reports", "/opt/report/bin/make-report", "/opt/report/bin", "/opt/report"):
    if os.lstat(path).st_mode & stat.S_IWOTH:
        fail(f"{path} is world-writable")
if os.path.exists("/srv/reports/daily.txt"):
    os.unlink("/srv/reports/daily.txt")
r = subprocess.run(["setpriv", "--reuid=app", "--regid=app", "--init-groups", "--",
                    "/opt/report/bin/make-report"], capture_output=True, text=True, timeout=60,
                   env={"PATH": "/usr/bin:/bin", "HOME": "/home/app"})
if r.returncode != 0:
    fail("the job fails as app: " + r.stderr.strip())
import pwd
if os.stat("/srv/reports/daily.txt").st_uid != pwd.getpwnam("app").pw_uid:
    fail("daily.txt is not owned by app")
print("the job runs as app")
