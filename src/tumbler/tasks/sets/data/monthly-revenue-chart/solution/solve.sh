#!/bin/bash
set -euo pipefail
python3 - <<'EOF'
import csv, json
from collections import defaultdict
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
t = defaultdict(float)
for r in csv.DictReader(open("/app/data/sales.csv")):
    t[r["date"][:7]] += int(r["units"]) * float(r["unit_price"])
months = sorted(t)
json.dump({m: round(t[m], 2) for m in months}, open("/app/answer.json", "w"))
plt.figure(figsize=(8, 4))
plt.plot(months, [t[m] for m in months], marker="o")
plt.title("Revenue by month, 2024")
plt.xticks(rotation=45)
plt.tight_layout()
plt.savefig("/app/revenue.png")
EOF
