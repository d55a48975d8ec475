"""Who may use the E2B-compatible routes when the server has tokens (auth on).

The control plane takes one of the server's tokens as E2B's API key (`X-API-Key`). Each
sandbox's envd calls carry that sandbox's access token (`X-Access-Token`), which the server
derives from its first token and the sandbox id (an HMAC), so it stores nothing and a token
opens only its own sandbox's data plane: the request must name that sandbox
(`E2b-Sandbox-Id`) and go to an envd route.
"""
from __future__ import annotations

import hashlib
import hmac

ENVD_PREFIXES = ("/process.Process/", "/filesystem.Filesystem/")
ENVD_PATHS = frozenset({"/files", "/health"})


def access_token(tokens: list[str], sandbox_id: str) -> str | None:
    """The envd access token of `sandbox_id`; None when the server has no tokens."""
    if not tokens:
        return None
    return hmac.new(tokens[0].encode(), b"e2b-envd:" + sandbox_id.encode(),
                    hashlib.sha256).hexdigest()


def allows(scope, tokens: list[bytes]) -> bool:
    """Whether a request that carries no bearer token may pass by E2B's own headers."""
    headers = dict(scope["headers"])
    key = headers.get(b"x-api-key")
    if key is not None:
        return any([hmac.compare_digest(key, t) for t in tokens])
    given, sandbox_id = headers.get(b"x-access-token"), headers.get(b"e2b-sandbox-id")
    path = scope["path"]
    if given is None or not sandbox_id or not tokens:
        return False
    if not (path in ENVD_PATHS or path.startswith(ENVD_PREFIXES)):
        return False
    expected = access_token([tokens[0].decode()], sandbox_id.decode(errors="replace"))
    return hmac.compare_digest(given, expected.encode())
