#!/bin/bash
set -euo pipefail
python3 - <<'EOF'
import csv, json
from collections import defaultdict
t = defaultdict(float)
for r in csv.DictReader(open("/app/data/sales.csv")):
    t[r["region"]] += int(r["units"]) * float(r["unit_price"])
json.dump({k: round(v, 2) for k, v in t.items()}, open("/app/answer.json", "w"))
EOF
