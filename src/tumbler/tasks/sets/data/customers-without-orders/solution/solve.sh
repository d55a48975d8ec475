#!/bin/bash
set -euo pipefail
python3 - <<'EOF'
import csv
ordered = {r["customer_id"] for r in csv.DictReader(open("/app/data/orders.csv"))}
ids = sorted(int(r["customer_id"]) for r in csv.DictReader(open("/app/data/customers.csv")) if r["customer_id"] not in ordered)
open("/app/answer.txt", "w").write("".join(f"{i}\n" for i in ids))
EOF
