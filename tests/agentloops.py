"""Agent programs for tests, shared by tests/agents and tests/train."""

# The bash agent's loop in the standard library: what the contract needs, and nothing to install.
STDLIB_AGENT = r'''
import json, os, subprocess, sys, urllib.request
base = os.environ["OPENAI_BASE_URL"]
tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
messages = [{"role": "user", "content": open(sys.argv[1]).read()}]
print("cwd", os.getcwd(), "mode", os.environ.get("AGENT_MODE"), flush=True)
for _ in range(10):
    req = urllib.request.Request(base + "/chat/completions", json.dumps(
        {"model": sys.argv[2], "messages": messages, "tools": tools}).encode(),
        {"content-type": "application/json"})
    message = json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["message"]
    messages.append(message)
    if not message.get("tool_calls"):
        break
    for call in message["tool_calls"]:
        command = json.loads(call["function"]["arguments"])["command"]
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
        messages.append({"role": "tool", "tool_call_id": call["id"],
                         "content": f"exit code: {done.returncode}\n{done.stdout}{done.stderr}"})
json.dump(messages, open("/logs/agent/mine.json", "w"))
'''
