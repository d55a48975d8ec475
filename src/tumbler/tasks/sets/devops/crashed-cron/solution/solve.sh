#!/bin/bash
set -euo pipefail
sed -i 's|^set -euo pipefail$|set -euo pipefail\nARCHIVE_ROOT=/srv/archive|' /opt/jobs/rotate-uploads.sh
/bin/sh -c '/opt/jobs/rotate-uploads.sh >> /var/log/rotate-uploads.log 2>&1'
