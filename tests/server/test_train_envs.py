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
