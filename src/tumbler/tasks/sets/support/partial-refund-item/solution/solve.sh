#!/bin/bash
set -euo pipefail
support refund 1003 --amount 12.50 --reason "one mug arrived broken"
support ticket close 3 --resolution resolved --reply "We refunded 12.50 for the broken mug."
