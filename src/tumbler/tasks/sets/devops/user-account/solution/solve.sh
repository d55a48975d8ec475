#!/bin/bash
set -euo pipefail
useradd --create-home --home-dir /home/deploy --shell /bin/bash --groups www-data deploy
install -d -m 700 -o deploy -g deploy /home/deploy/.ssh
install -m 600 -o deploy -g deploy /root/deploy_key.pub /home/deploy/.ssh/authorized_keys
