"""An agent program that plays GuessTheNumber through the OpenAI API (the `openai` package).

Run inside a sandbox whose model endpoint is on (OPENAI_BASE_URL and OPENAI_API_KEY come from
the bridge), e.g. `bridge.start_episode(sb.id, ["python3", "/root/openai_agent.py"])`. It is an
ordinary OpenAI client: nothing in it knows about Tumbler except where the game comes from (the
built-in games travel into every sandbox with the agent, at /.tumbler/agent/envgames).

Prints one JSON line at the end: {"reward", "turns", "solved"}.
"""
import argparse
import json
import sys

from openai import OpenAI

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

    client = OpenAI(max_retries=0, timeout=120)   # base URL and key from the environment
    env = GuessTheNumber(low=opts.low, high=opts.high, max_turns=opts.max_turns)
    obs, _ = env.reset(seed=opts.seed)
    say = (lambda o: f"{o}\n{opts.instructions}") if opts.instructions else str
    messages = [{"role": "system", "content": opts.system}, {"role": "user", "content": say(obs)}]
    reward, turns, done = 0.0, 0, False
    while not done:
        reply = ask(client, messages, opts.stream)
        messages.append({"role": "assistant", "content": reply})
        obs, r, terminated, truncated, _ = env.step(reply)
        reward, turns, done = reward + r, turns + 1, terminated or truncated
        messages.append({"role": "user", "content": say(obs)})
    print(json.dumps({"reward": reward, "turns": turns, "solved": reward > 0}))


def ask(client: OpenAI, messages: list, stream: bool) -> str:
    if not stream:
        answer = client.chat.completions.create(model="policy", messages=messages, temperature=1.0)
        return answer.choices[0].message.content or ""
    chunks = client.chat.completions.create(model="policy", messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


if __name__ == "__main__":
    main()
