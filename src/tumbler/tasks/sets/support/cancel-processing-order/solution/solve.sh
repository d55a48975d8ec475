#!/bin/bash
set -euo pipefail
support order update 1006 --status cancelled
support refund 1006 --amount 52.49 --payment 6 --reason "cancelled at the customer's request"
support ticket close 6 --resolution resolved --reply "Order 1006 is cancelled and 52.49 refunded."
