import json, sys
sys.path.insert(0, '/tests')
from check_db import check

check(json.loads('{"update": {"tickets": {"9": {"status": "closed", "resolution": "resolved"}}, "customers": {"9": {"email": "ivan.petrov@example.net"}}}}'))
