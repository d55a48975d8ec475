import json, sys
sys.path.insert(0, '/tests')
from check_db import check

check(json.loads('{"update": {"tickets": {"7": {"status": "closed", "resolution": "resolved"}}, "payments": {"8": {"status": "refunded"}}}, "insert": {"refunds": [{"order_id": 1007, "payment_id": 8, "amount": 129.0}]}}'))
