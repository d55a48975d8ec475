#!/bin/bash
set -euo pipefail
support ticket close 2 --resolution denied --reply "Order 1002 was delivered on 2025-01-20, more than 30 days ago, so it can no longer be refunded."
