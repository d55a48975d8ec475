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

EXPECTED = {'/home/alice/.ssh/authorized_keys': '6acb8d90c7b7c694b0083283b5879ee11c93b79e86fd14d8b3093f0b2d186c11'}
unchanged(EXPECTED)
import pwd
uid = pwd.getpwnam("alice").pw_uid
for path, mode in (("/home/alice", None), ("/home/alice/.ssh", 0o700),
                   ("/home/alice/.ssh/authorized_keys", 0o600)):
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != uid:
        fail(f"{path} is not owned by alice")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        fail(f"{path} is writable by group or others")
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        fail(f"{path} has mode {oct(stat.S_IMODE(st.st_mode))}")
print("sshd would accept")
