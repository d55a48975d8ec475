import hashlib, os, stat, sys, time, urllib.request

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

EXPECTED = {'/opt/backup/bin/backup': 'b2af9aa0f7c14241240a2ed4389f3fbc349d164b7587baf966903696f4c16e3f'}
unchanged(EXPECTED)
path = "/etc/cron.d/backup"
if not os.path.isfile(path) or os.path.islink(path):
    fail("no /etc/cron.d/backup")
st = os.stat(path)
if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
    fail("cron ignores a cron.d file not owned by root or writable by others")
jobs = [l.split(None, 6) for l in open(path) if l.strip() and not l.lstrip().startswith("#")
        and "=" not in l.split()[0]]
if len(jobs) != 1 or len(jobs[0]) != 7:
    fail(f"expected one job line, found {len(jobs)}")
minute, hour, dom, mon, dow, user, command = jobs[0]
if (minute, hour.lstrip("0") or "0", dom, mon, dow) != ("30", "2", "*", "*", "*"):
    fail(f"schedule {minute} {hour} {dom} {mon} {dow} is not 02:30 daily")
if user != "backup":
    fail(f"runs as {user}")
if not command.startswith("/opt/backup/bin/backup") or ">>" not in command \
        or "/var/log/backup.log" not in command or "2>&1" not in command:
    fail(f"command {command!r} does not append output and errors to /var/log/backup.log")
print("scheduled")
