#!/bin/bash
set -euo pipefail
python3 - <<'EOF'
import csv, json
from collections import defaultdict
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
by = defaultdict(list)
for r in csv.DictReader(open("/app/data/latency.csv")):
    by[r["endpoint"]].append(float(r["latency_ms"]))
json.dump({ep: {"p50": round(float(np.percentile(xs, 50)), 1), "p95": round(float(np.percentile(xs, 95)), 1)}
           for ep, xs in by.items()}, open("/app/answer.json", "w"))
plt.hist([x for xs in by.values() for x in xs], bins=30)
plt.xlabel("latency (ms)")
plt.savefig("/app/latency.svg")
EOF
