#!/bin/bash
set -euo pipefail
rm -f /var/lib/queue/worker.lock
/opt/queue/bin/worker
