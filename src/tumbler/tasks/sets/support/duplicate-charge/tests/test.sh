#!/bin/bash
# The verifier: check.py decides; the reward is 1 or 0.
mkdir -p /logs/verifier
if python3 -I /tests/check.py; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
