#!/usr/bin/env bash
# Create (or refresh) the peers' venv, kept apart from Tumbler's own venv: ROCK's Python SDK and
# in-sandbox server (PyPI `rl-rock`, command `rocklet`) and SWE-ReX (PyPI `swe-rex`, command
# `swerex-remote`). Used by bench/peers.py and the ROCK compatibility tests. Idempotent: a venv
# that already has both at the pinned versions is left as it is.
#
#   bash scripts/peers-venv.sh            # -> /opt/peers-venv
#   PEERS_VENV=/tmp/pv bash scripts/peers-venv.sh
set -euo pipefail
VENV=${PEERS_VENV:-/opt/peers-venv}
PY=${PYTHON:-python3}
ROCK_VERSION=${ROCK_VERSION:-1.11.0}
SWEREX_VERSION=${SWEREX_VERSION:-}

want_rock="rl-rock[rocklet]==$ROCK_VERSION"  # [rocklet]: fastapi, uvicorn, pexpect, bashlex, psutil, gem
want_swerex="swe-rex${SWEREX_VERSION:+==$SWEREX_VERSION}"

have() {  # the venv's python can import both and the two commands exist
  [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/rocklet" ] && [ -x "$VENV/bin/swerex-remote" ] || return 1
  "$VENV/bin/python" - "$ROCK_VERSION" "$SWEREX_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
rock, swerex = sys.argv[1], sys.argv[2]
assert version("rl-rock") == rock, version("rl-rock")
if swerex:
    assert version("swe-rex") == swerex
import rock.sdk.sandbox.client, rock.rocklet.linux, swerex.server  # noqa: F401
PY
}

if have; then
  echo "peers venv ready: $VENV ($("$VENV/bin/python" -c 'from importlib.metadata import version as v; print("rl-rock", v("rl-rock"), "swe-rex", v("swe-rex"))'))"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip 2>/dev/null || true
# The global pip constraints file pins packages for Tumbler's venv; the peers resolve their own.
# (pip warns once per package about local index folders that do not hold it: noise, filtered.)
PIP_CONSTRAINT= "$VENV/bin/python" -m pip install --quiet "$want_rock" "$want_swerex" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
have || { echo "peers venv: install finished but rl-rock/swe-rex are not usable in $VENV" >&2; exit 1; }
echo "peers venv ready: $VENV"
