#!/bin/bash
set -euo pipefail
python3 - <<'EOF'
import csv
from collections import Counter
c = Counter()
for r in csv.DictReader(open("/app/data/sales.csv")):
    c[r["product"]] += int(r["units"])
open("/app/answer.txt", "w").write("\n".join(p for p, _ in c.most_common(3)) + "\n")
EOF
