#!/usr/bin/env bash
# Podman's Docker-compatible API service for the container backend (tests, bench, dev).
# Idempotent: installs Podman if missing, writes its config, starts the service if its socket
# does not answer, and waits (at most PODMAN_WAIT_S seconds) until it does. Needs root on Debian 12.
#
#   scripts/podman-service.sh            # then: DOCKER_HOST=unix:///run/tumbler/podman.sock
#   PODMAN_SOCK=/path.sock scripts/podman-service.sh
set -euo pipefail

SOCK="${PODMAN_SOCK:-/run/tumbler/podman.sock}"
WAIT_S="${PODMAN_WAIT_S:-30}"
LOG="${PODMAN_LOG:-/var/log/tumbler-podman.log}"
# crun refuses this host's hybrid cgroups, so runc; recommends (fuse-overlayfs, slirp4netns,
# buildah) are left out: rootful Podman with network none/host needs none of them.
APT_PACKAGES=(podman runc conmon golang-github-containers-common uidmap)
CONF=/etc/containers/containers.conf

log() { echo "podman-service: $*" >&2; }

install_podman() {
  command -v podman >/dev/null && command -v runc >/dev/null && return
  command -v apt-get >/dev/null || { log "needs Debian/Ubuntu (apt-get) to install Podman"; exit 1; }
  log "installing ${APT_PACKAGES[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}"
}

write_config() {
  local want
  want=$(cat <<'CONF'
# Written by tumbler scripts/podman-service.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
)
  mkdir -p "$(dirname "$CONF")"
  if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$want" ]]; then
    [[ -f "$CONF" ]] && cp "$CONF" "$CONF.bak.$(date +%s)"
    printf '%s\n' "$want" > "$CONF"
    log "wrote $CONF"
  fi
}

subids() {
  # Ids for `--userns=auto` (DockerRuntime's default on Podman): far above the process runtime's
  # 100000-165535, room for 4096 sandboxes of 65536 ids each. An entry this script wrote
  # before (room for 256) is widened.
  local f
  for f in /etc/subuid /etc/subgid; do
    sed -i 's/^containers:1000000:16777216$/containers:1000000:268435456/' "$f" 2>/dev/null || true
    grep -q '^containers:' "$f" 2>/dev/null || echo "containers:1000000:268435456" >> "$f"
  done
}

answers() {
  # The Docker API's ping, over the unix socket; 2 s at most.
  python3 - "$SOCK" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(2)
s.connect(sys.argv[1]); s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
sys.exit(0 if b"200 OK" in s.recv(256) else 1)
PY
}

start_service() {
  answers && { log "service answers at $SOCK"; return; }
  mkdir -p "$(dirname "$SOCK")"
  rm -f "$SOCK"
  log "starting podman system service at $SOCK (log: $LOG)"
  # Run it from a directory of its own: conmon leaves files such as `oom` (a container was
  # OOM-killed) in its working directory, which would otherwise be wherever make ran.
  mkdir -p /var/lib/tumbler/podman
  (cd /var/lib/tumbler/podman && exec nohup setsid podman system service --time=0 \
     "unix://$SOCK") >>"$LOG" 2>&1 </dev/null &
  local deadline=$((SECONDS + WAIT_S))
  until answers; do
    if (( SECONDS >= deadline )); then
      log "service did not answer at $SOCK within ${WAIT_S} s; see $LOG:"
      tail -n 20 "$LOG" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  log "service answers at $SOCK"
}

install_podman
write_config
subids
start_service
