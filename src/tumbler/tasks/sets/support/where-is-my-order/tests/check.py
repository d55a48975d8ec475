import json, sys
sys.path.insert(0, '/tests')
from check_db import check

check(json.loads('{"update": {"tickets": {"8": {"status": "closed", "resolution": "answered"}}}, "reply_contains": {"8": ["1Z999AA10123456784"]}}'))
