"""Drives Tumbler's /apis/v1/envs/gem routes with ROCK's real, unmodified `RockEnv` (rl-rock).

Runs under the peers' venv: /opt/peers-venv/bin/python rock_env_client.py SCENARIO BASE_URL.
RockEnv takes its base URL from the env var ROCK_BASE_URL only (read at import) and sends no
auth header, so the server under test runs without tokens. Prints one JSON object: what each
call returned (or raised), for test_rock_envs.py to assert on.
"""
from __future__ import annotations

import json
import os
import re
import sys


def record(out: dict, key: str, fn, *args, **kwargs):
    try:
        value = fn(*args, **kwargs)
        out[key] = list(value) if isinstance(value, tuple) else value
        return value
    except Exception as exc:  # the test asserts on which calls raise
        out[key] = {"raised": type(exc).__name__, "message": str(exc)[:800]}
        return None


def play(env_id: str) -> dict:
    """make, reset (twice, same seed), binary search to the end, close."""
    from rock.sdk.envs import RockEnv, make
    out: dict = {}
    env = record(out, "make", make, env_id)
    if env is None:
        return out
    out["is_rock_env"] = isinstance(env, RockEnv)
    out["sandbox_id"] = env._sandbox_id
    try:
        record(out, "reset", env.reset, seed=11)
        record(out, "reset_again", env.reset, seed=11)
        low, high = 1, 10
        steps = []
        for _ in range(6):
            guess = (low + high) // 2
            result = record(out, "step", env.step, f"\\boxed{{{guess}}}")
            if result is None:
                break
            steps.append(list(result))
            obs, _reward, terminated, truncated, _info = result
            if terminated or truncated:
                break
            if re.search(r"higher", obs, re.I):
                low = guess + 1
            else:
                high = guess - 1
        out["steps"] = steps
    finally:
        record(out, "close", env.close)
        record(out, "close_again", env.close)
    return out


def bad() -> dict:
    """Unknown env id; step before reset; a sandbox_id the server does not know."""
    from rock.sdk.envs import RockEnv
    out: dict = {}
    record(out, "unknown", RockEnv, "game:NoSuchGame-v0")
    env = record(out, "make", RockEnv, "game:GuessTheNumber-v0-easy")
    if env is not None:
        out["sandbox_id"] = env._sandbox_id
        record(out, "early_step", env.step, "\\boxed{5}")
        record(out, "close", env.close)
        env._sandbox_id, env._is_closed = out["sandbox_id"], False      # a closed env's id
        record(out, "step_after_close", env.step, "\\boxed{5}")
    return out


if __name__ == "__main__":
    scenario, base_url = sys.argv[1], sys.argv[2]
    os.environ["ROCK_BASE_URL"] = base_url
    result = play(sys.argv[3]) if scenario == "play" else bad()
    print(json.dumps(result, default=str))
