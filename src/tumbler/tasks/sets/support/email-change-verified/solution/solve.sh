#!/bin/bash
set -euo pipefail
support customer update 9 --email ivan.petrov@example.net
support ticket close 9 --resolution resolved --reply "Your email address is now ivan.petrov@example.net."
