"""Agent programs run in sandboxes under one contract: install steps, a run-command template.

A program (`program.AgentProgram`, one TOML file per program in `programs/`) says how to
install it into a task's image at build time, how to start it with the task's prompt, its
environment, working directory and timeout; `ProgramAgent` runs it as an episode of the model
service (OPENAI_BASE_URL / ANTHROPIC_BASE_URL wired in, network off) for `tumbler tasks run`,
and collects its exit, output and trajectory. `owners.py` holds who answers its model calls: a
table (`ScriptedOwner`, no LLM) or an upstream server. Shipped: bash (Tumbler's minimal agent
on the `openai` package), mini-swe-agent, qwen-code, claude-code.

Imports: tumbler.modelservice, tumbler.runtime (image builds), tumbler.tasks.agents (the contract).
"""
from tumbler.agents.owners import ScriptedOwner, UpstreamOwner
from tumbler.agents.program import AgentProgram, ProgramAgent, load_program, shipped_programs

__all__ = ["AgentProgram", "ProgramAgent", "ScriptedOwner", "UpstreamOwner", "load_program",
           "shipped_programs"]
