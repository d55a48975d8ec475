import json, sys
sys.path.insert(0, '/tests')
from check_db import check

check(json.loads('{"update": {"tickets": {"6": {"status": "closed", "resolution": "resolved"}}, "orders": {"1006": {"status": "cancelled"}}, "payments": {"6": {"status": "refunded"}}}, "insert": {"refunds": [{"order_id": 1006, "payment_id": 6, "amount": 52.49}]}}'))
