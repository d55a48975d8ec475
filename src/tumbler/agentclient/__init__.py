"""The host's clients of the in-sandbox agent (the agent itself is `tumbler.agent`).

    blocking.py   AgentClient: a pool of unix-socket connections, one call in flight each
    aio.py        AsyncAgentClient: one multiplexed connection per sandbox, on asyncio
    errors.py     agent_errors: the agent's refusals and hang-ups said as TumblerErrors

Both clients treat the agent as hostile: every reply is capped at what its call asked for
(`reply_limit`), and one deadline bounds each call, events included.
"""
from tumbler.agentclient.aio import AsyncAgentClient
from tumbler.agentclient.blocking import AgentClient, AgentGone, reply_limit
from tumbler.agentclient.errors import agent_errors

__all__ = ["AgentClient", "AgentGone", "AsyncAgentClient", "agent_errors", "reply_limit"]
