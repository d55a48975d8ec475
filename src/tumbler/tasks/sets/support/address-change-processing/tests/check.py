import json, sys
sys.path.insert(0, '/tests')
from check_db import check

check(json.loads('{"update": {"tickets": {"4": {"status": "closed", "resolution": "resolved"}}, "orders": {"1004": {"ship_address": {"any": ["77 Harbor Rd, Portsmouth", "77 Harbor Rd., Portsmouth", "77 Harbor Road, Portsmouth"]}}}}}'))
