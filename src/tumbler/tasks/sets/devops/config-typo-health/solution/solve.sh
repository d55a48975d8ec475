#!/bin/bash
set -euo pipefail
sed -i 's/^\[sever\]$/[server]/' /etc/webapp/webapp.ini
/opt/webapp/bin/start
/opt/webapp/bin/healthcheck
