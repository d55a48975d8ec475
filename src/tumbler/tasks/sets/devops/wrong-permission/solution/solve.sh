#!/bin/bash
set -euo pipefail
chmod 755 /opt/report/bin/make-report
chown app:app /srv/reports
runuser -u app -- /opt/report/bin/make-report
