import json, sys
sys.path.insert(0, '/tests')
from check_db import check

check(json.loads('{"update": {"tickets": {"11": {"status": "closed", "resolution": "denied"}}}}'))
