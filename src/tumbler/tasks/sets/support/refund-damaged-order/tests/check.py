import json, sys
sys.path.insert(0, '/tests')
from check_db import check

check(json.loads('{"update": {"tickets": {"1": {"status": "closed", "resolution": "resolved"}}, "orders": {"1001": {"status": "refunded"}}, "payments": {"1": {"status": "refunded"}}}, "insert": {"refunds": [{"order_id": 1001, "payment_id": 1, "amount": 59.9}]}}'))
