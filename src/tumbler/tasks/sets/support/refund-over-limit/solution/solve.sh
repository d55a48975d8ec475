#!/bin/bash
set -euo pipefail
support ticket escalate 10 --reply "A refund of 749.00 needs a supervisor's approval; we have passed your request on."
