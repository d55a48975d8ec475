#!/bin/bash
# Moves finished uploads (*.done) out of /srv/uploads into a dated folder of the archive.
# The archive root is /srv/archive.
set -euo pipefail
DEST="$ARCHIVE_ROOT/$(date +%F)"
mkdir -p "$DEST"
find /srv/uploads -maxdepth 1 -name '*.done' -print0 | xargs -0 -r mv -t "$DEST"
echo "$(date -Is) rotated into $DEST"
