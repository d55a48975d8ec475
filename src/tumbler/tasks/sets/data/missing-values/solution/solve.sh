#!/bin/bash
set -euo pipefail
python3 - <<'EOF'
import csv, json
from collections import defaultdict
v = defaultdict(list); missing = 0
for r in csv.DictReader(open("/app/data/sensors.csv")):
    if r["temperature_c"].strip():
        v[r["sensor"]].append(float(r["temperature_c"]))
    else:
        missing += 1
json.dump({"missing": missing, "mean": {s: round(sum(x) / len(x), 2) for s, x in v.items()}}, open("/app/answer.json", "w"))
EOF
