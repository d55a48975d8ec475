"""The same GuessTheNumber agent as openai_agent.py, with plain HTTP (standard library only).

Any image with python3 runs it: it posts to $OPENAI_BASE_URL/chat/completions as the `openai`
package would, and reads either the JSON answer or, with --stream, the SSE chunks.

Prints one JSON line at the end: {"reward", "turns", "solved"}.
"""
import argparse
import json
import os
import sys
import urllib.request

sys.path.insert(0, "/.tumbler")
from agent.envgames import GuessTheNumber  # noqa: E402

SYSTEM = "You play a guessing game. Answer with your guess in \\boxed{}, nothing else."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--low", type=int, default=1)
    parser.add_argument("--high", type=int, default=100)
    parser.add_argument("--max-turns", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stream", action="store_true", help="ask for streamed answers")
    parser.add_argument("--system", default=SYSTEM, help="the system message")
    parser.add_argument("--instructions", default="", help="text added after every observation")
    opts = parser.parse_args()

    env = GuessTheNumber(low=opts.low, high=opts.high, max_turns=opts.max_turns)
    obs, _ = env.reset(seed=opts.seed)
    say = (lambda o: f"{o}\n{opts.instructions}") if opts.instructions else str
    messages = [{"role": "system", "content": opts.system}, {"role": "user", "content": say(obs)}]
    reward, turns, done = 0.0, 0, False
    while not done:
        reply = ask(messages, opts.stream)
        messages.append({"role": "assistant", "content": reply})
        obs, r, terminated, truncated, _ = env.step(reply)
        reward, turns, done = reward + r, turns + 1, terminated or truncated
        messages.append({"role": "user", "content": say(obs)})
    print(json.dumps({"reward": reward, "turns": turns, "solved": reward > 0}))


def ask(messages: list, stream: bool) -> str:
    body = json.dumps({"model": "policy", "messages": messages, "stream": stream}).encode()
    request = urllib.request.Request(
        os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body,
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer " + os.environ.get("OPENAI_API_KEY", "")})
    with urllib.request.urlopen(request, timeout=120) as reply:
        if not stream:
            return json.load(reply)["choices"][0]["message"]["content"] or ""
        text = []
        for line in reply:
            data = line.decode().strip()
            if data.startswith("data: ") and data != "data: [DONE]":
                choices = json.loads(data[6:])["choices"]
                text += [c["delta"].get("content") or "" for c in choices]
        return "".join(text)


if __name__ == "__main__":
    main()
