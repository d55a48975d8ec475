#!/bin/bash
set -euo pipefail
sqlite3 /app/data/shop.db "SELECT email FROM customers WHERE id NOT IN (SELECT customer_id FROM orders WHERE ordered_at >= '2024-07-01') ORDER BY email" > /app/answer.txt
