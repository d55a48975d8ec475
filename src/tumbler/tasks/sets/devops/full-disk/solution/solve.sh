#!/bin/bash
set -euo pipefail
rm -f /var/log/app/app.log.[0-9]*
/opt/app/bin/diskcheck
