#!/bin/bash
set -euo pipefail
chown alice:alice /home/alice /home/alice/.ssh /home/alice/.ssh/authorized_keys
chmod 755 /home/alice
chmod 700 /home/alice/.ssh
chmod 600 /home/alice/.ssh/authorized_keys
