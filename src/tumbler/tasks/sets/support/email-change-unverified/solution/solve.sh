#!/bin/bash
set -euo pipefail
support ticket close 11 --resolution denied --reply "For your security we can only change your email when you contact us from the phone number or email address on file."
