"""The trainer's rollouts through a server: envs hosted in sandboxes made by `tumbler serve`,
driven over HTTP through the same sandbox handle as local ones."""
from server_process import TOKEN

from tumbler.train.chat import ChatRenderer
from tumbler.train.policy import GenerationParams
from tumbler.train.rollout import EnvPool, rollout
from tumbler.train.scripted import ScriptedPolicy


def test_rollout_through_envs_hosted_by_a_server(server, api):
    from transformers import AutoTokenizer
    from tumbler.train.models import resolve
    tokenizer = AutoTokenizer.from_pretrained(resolve("smollm2"))
    policy = ScriptedPolicy(tokenizer, ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"])
    renderer = ChatRenderer(tokenizer, policy.eot_id)
    kwargs = dict(low=1, high=4, max_turns=4)
    with EnvPool.hosted("GuessTheNumber-v0", 2, server=server.url, token=TOKEN, **kwargs) as remote:
        api.made.extend(sb.id for sb in remote.sandboxes)
        got, stats = rollout(policy, renderer, remote, [3, 4], [0, 1], GenerationParams(8), max_turns=4)
        assert {sb.id for sb in remote.sandboxes} <= {s.id for s in api.list()}
    with EnvPool.in_process("GuessTheNumber-v0", 2, **kwargs) as local:
        want, _ = rollout(policy, renderer, local, [3, 4], [0, 1], GenerationParams(8), max_turns=4)
    assert [ep.success for ep in got] == [True, True] and stats.failed_episodes == 0
    assert [ep.token_ids for ep in got] == [ep.token_ids for ep in want]
    assert api.list() == []                      # the pool removed its sandboxes


def test_agent_mode_through_a_server(server, api):
    """Agent programs in a server's sandboxes: the bridge reaches their model endpoints over the
    server's model routes, and the trainer's tokens and replayed rewards are as local ones."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from tumbler.train.agentmode import AgentPool
    from tumbler.train.config import build_config
    from tumbler.train.models import resolve
    tokenizer = AutoTokenizer.from_pretrained(resolve("smollm2"))
    example = Path(__file__).resolve().parents[2] / "examples" / "urllib_agent.py"
    cfg = build_config({"mode": "agent", "env": {"kwargs": {"low": 1, "high": 4, "max_turns": 4}},
                        "agent": {"command": ["python3", "/root/agent.py", "--seed", "{seed}",
                                              "--low", "1", "--high", "4", "--max-turns", "4"],
                                  "files": {"/root/agent.py": str(example)}, "image": "debian",
                                  "server": server.url, "server_token": TOKEN, "timeout_s": 60}})
    policy = ScriptedPolicy(tokenizer, ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"])
    with AgentPool(2, cfg.agent, cfg.env) as pool:
        api.made.extend(sb.id for sb in pool.sandboxes)
        episodes, stats = pool.play(policy, ChatRenderer(tokenizer, policy.eot_id), [3, 4], [0, 1],
                                    GenerationParams(8), max_turns=4)
    assert [ep.error for ep in episodes] == [None, None]
    assert all(ep.success for ep in episodes) and stats.rewritten_histories == 0
    assert api.list() == []
