#!/bin/bash
set -euo pipefail
support ticket close 8 --resolution answered --reply "Your shoes are on their way: tracking number 1Z999AA10123456784."
