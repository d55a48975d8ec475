#!/bin/bash
set -euo pipefail
support refund 1007 --amount 129.00 --payment 8 --reason "duplicate charge"
support ticket close 7 --resolution resolved --reply "You were charged twice; we refunded the second charge of 129.00."
