#!/bin/bash
set -euo pipefail
support refund 1001 --amount 59.90 --payment 1 --reason "arrived broken"
support order update 1001 --status refunded
support ticket close 1 --resolution resolved --reply "Sorry about the blender: we refunded 59.90 to your card."
