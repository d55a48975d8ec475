#!/bin/bash
set -euo pipefail
sqlite3 -json /app/data/shop.db "
  SELECT c.country AS country, ROUND(AVG(t.total), 2) AS avg FROM
    (SELECT o.id, o.customer_id, SUM(i.quantity * p.price) AS total FROM orders o
     JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id
     GROUP BY o.id) t JOIN customers c ON c.id = t.customer_id GROUP BY c.country" \
  | python3 -c 'import json, sys; json.dump({r["country"]: r["avg"] for r in json.load(sys.stdin)}, open("/app/answer.json", "w"))'
