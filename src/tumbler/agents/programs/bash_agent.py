"""Tumbler's minimal bash agent: one `bash` tool, the `openai` package, nothing else.

Runs in a sandbox as a model-service episode (OPENAI_BASE_URL and OPENAI_API_KEY come from
its environment). Each turn asks the model; each tool call runs in bash, its output (capped)
goes back as the tool's result; a turn without tool calls ends the run. The conversation is
written to --trajectory as JSON. Exit 0 when the model stopped, 2 when --max-turns ran out.

    python3 bash_agent.py --prompt-file /logs/agent/prompt.txt --model policy
"""
import argparse
import json
import subprocess
import sys

from openai import OpenAI

SYSTEM = ("You are an agent in a Linux sandbox. Solve the task with the bash tool, one command "
          "at a time; look at each result before the next. When the task is done, answer "
          "without a tool call.")
TOOLS = [{"type": "function", "function": {
    "name": "bash", "description": "Run a bash command; returns its exit code and output.",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                   "required": ["command"]}}}]
OUTPUT_CAP = 16000   # characters of a command's output sent back


def run(command: str, timeout: float) -> str:
    try:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"(timed out after {timeout:g} s)"
    out = (done.stdout + done.stderr)[-OUTPUT_CAP:]
    return f"exit code: {done.returncode}\n{out}"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--prompt-file", required=True)
    p.add_argument("--model", default="policy")
    p.add_argument("--max-turns", type=int, default=30)
    p.add_argument("--command-timeout", type=float, default=120.0)
    p.add_argument("--trajectory", default="/logs/agent/bash-agent.json")
    args = p.parse_args()
    client = OpenAI()
    with open(args.prompt_file) as fh:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": fh.read()}]
    code = 2
    for _ in range(args.max_turns):
        reply = client.chat.completions.create(model=args.model, messages=messages, tools=TOOLS)
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            print(message.content or "")
            code = 0
            break
        for call in message.tool_calls:
            try:
                command = json.loads(call.function.arguments or "{}").get("command", "")
            except ValueError:
                command = ""
            result = run(command, args.command_timeout) if command else "error: no command given"
            print(f"$ {command}\n{result}", flush=True)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    with open(args.trajectory, "w") as fh:
        json.dump(messages, fh)
    return code


if __name__ == "__main__":
    sys.exit(main())
