#!/bin/bash
set -euo pipefail
support customer update 5 --address "9 Elm Court, Shelbyville"
support ticket close 5 --resolution denied --reply "Order 1005 has already shipped, so its address cannot be changed; we updated the address on your profile for future orders."
