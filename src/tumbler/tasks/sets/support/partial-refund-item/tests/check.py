import json, sys
sys.path.insert(0, '/tests')
from check_db import check

check(json.loads('{"update": {"tickets": {"3": {"status": "closed", "resolution": "resolved"}}}, "insert": {"refunds": [{"order_id": 1003, "payment_id": null, "amount": 12.5}]}}'))
