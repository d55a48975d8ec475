#!/bin/bash
set -euo pipefail
mkdir -p /var/lib/app/data
/opt/app/bin/start-app
