import json, sys
sys.path.insert(0, '/tests')
from check_db import check

check(json.loads('{"update": {"tickets": {"5": {"status": "closed", "resolution": {"any": ["resolved", "denied"]}}}, "customers": {"5": {"address": {"any": ["9 Elm Court, Shelbyville", "9 Elm Ct, Shelbyville"]}}}}}'))
