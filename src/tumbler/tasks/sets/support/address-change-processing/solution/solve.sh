#!/bin/bash
set -euo pipefail
support order update 1004 --ship-address "77 Harbor Rd, Portsmouth"
support ticket close 4 --resolution resolved --reply "Your lamp will be shipped to 77 Harbor Rd, Portsmouth."
