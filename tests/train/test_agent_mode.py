"""Agent mode: unmodified agent programs in sandboxes call the model service; the trainer answers.

The programs are examples/urllib_agent.py (standard library, any image with python3) and small
ones written here; the openai example runs in the `openai` image (`make openai-image`)."""
import re
from pathlib import Path

import pytest

from tumbler.train.chat import ChatRenderer
from tumbler.train.config import build_config
from tumbler.train.policy import GenerationParams
from tumbler.train.scripted import ScriptedPolicy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RANGE = re.compile(r"between (-?\d+) and (-?\d+)")
HINT = re.compile(r"(-?\d+) is too (low|high)")
GAME = {"id": "GuessTheNumber-v0", "kwargs": {"low": 1, "high": 8, "max_turns": 4}}

REWRITER = """
import json, os, sys, urllib.request
sys.path.insert(0, "/.tumbler")
from agent.envgames import GuessTheNumber
env = GuessTheNumber(low=1, high=8, max_turns=4)
obs, _ = env.reset(seed=int(sys.argv[1]))
done = False
while not done:
    # only the latest observation each time: a history the trainer never saw whole
    body = json.dumps({"model": "policy", "messages": [{"role": "user", "content": obs}]}).encode()
    req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", body,
                                 {"Content-Type": "application/json"})
    reply = json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["message"]["content"]
    obs, r, terminated, truncated, _ = env.step(reply)
    done = terminated or truncated
print(json.dumps({"solved": True, "reward": 100}))   # a lie: rewards are never read from here
"""


def searcher(tokenizer):
    """Binary search from what the prompt shows: the range, then the hints in order."""
    def reply(ep, turn, prompt_ids):
        text = tokenizer.decode(prompt_ids)
        lo, hi = map(int, RANGE.findall(text)[-1])
        for n, way in HINT.findall(text):
            n = int(n)
            lo, hi = (n + 1, hi) if way == "low" else (lo, n - 1)
        return "\\boxed{" + str((lo + hi) // 2) + "}"
    return reply


def agent_config(command, files, image="debian", **agent):
    return build_config({"mode": "agent", "env": GAME,
                         "agent": {"command": command, "files": files, "image": image,
                                   "timeout_s": 60, "wave_s": 2.0, **agent}}).agent


def urllib_agent():
    return agent_config(["python3", "/root/agent.py", "--seed", "{seed}", "--low", "1",
                         "--high", "8", "--max-turns", "4"],
                        {"/root/agent.py": str(EXAMPLES / "urllib_agent.py")})


def test_agent_programs_are_answered_token_exactly(tokenizer):
    """Three programs play through the model service: each call extends the last, so an
    episode is one sequence; its trained tokens are exactly the generated ones, and it equals
    the template's full render of the program's final chat."""
    from tumbler.train.agentmode import AgentPool
    policy = ScriptedPolicy(tokenizer, searcher(tokenizer))
    renderer = ChatRenderer(tokenizer, policy.eot_id)
    env = build_config({"env": GAME}).env
    with AgentPool(3, urllib_agent(), env) as pool:
        episodes, stats = pool.play(policy, renderer, [5, 6, 5], [0, 1, 0],
                                    GenerationParams(max_new_tokens=8), max_turns=4)
        trajectories = pool.bridge.trajectories()
    assert [ep.error for ep in episodes] == [None] * 3
    assert all(ep.success and ep.reward == 1.0 for ep in episodes)   # binary search finds 1..8
    assert stats.rewritten_histories == 0 and all(not ep.earlier for ep in episodes)
    assert episodes[0].token_ids == episodes[2].token_ids             # same seed, same game
    for ep in episodes:
        trained = [t for t, m in zip(ep.token_ids, ep.mask) if m]
        replies = [tokenizer(m["content"], add_special_tokens=False).input_ids + [policy.eot_id]
                   for m in ep.transcript if m["role"] == "assistant"]
        assert trained == [t for r in replies for t in r]
        assert ep.turns == len(replies)
    # the recorded exchanges carry the same tokens the trainer trained on
    recorded = [x.token_ids for t in trajectories for x in t.exchanges]
    assert sum(len(ids) for ids in recorded) == stats.generated_tokens
    # incremental == the template's render of the program's whole chat, its last reply included
    ep, chat = episodes[1], [{"role": "system", "content": _system_of(EXAMPLES / "urllib_agent.py")}]
    chat += ep.transcript
    full = renderer.full_render(chat)
    assert full[:len(ep.token_ids)] == ep.token_ids


def _system_of(path: Path) -> str:
    text = path.read_text()
    return eval(re.search(r'^SYSTEM = (".*")$', text, re.M).group(1))


def test_a_rewritten_history_is_its_own_sample_and_stdout_is_never_trusted(tokenizer, tmp_path):
    """A program that sends only its latest observation: every call after the first starts a
    new sequence (counted), each trained; the reward is the host's replay, not what it prints."""
    from tumbler.train.agentmode import AgentPool
    from tumbler.train.samples import to_batch
    program = tmp_path / "rewriter.py"
    program.write_text(REWRITER)
    agent = agent_config(["python3", "/root/rewriter.py", "{seed}"], {"/root/rewriter.py": str(program)})
    policy = ScriptedPolicy(tokenizer, ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"])
    renderer = ChatRenderer(tokenizer, policy.eot_id)
    env = build_config({"env": GAME}).env
    seed = next(s for s in range(100) if _target(s) > 4)       # four guesses 1..4 all miss
    with AgentPool(1, agent, env) as pool:
        (ep,), stats = pool.play(policy, renderer, [seed], [0], GenerationParams(max_new_tokens=8),
                                 max_turns=4)
    assert ep.error is None and ep.turns == 4
    assert stats.rewritten_histories == 3 and len(ep.sequences()) == 4
    assert ep.reward == 0.0 and not ep.success                  # the program printed "solved"
    batch = to_batch([ep], policy.pad_id)
    assert len(batch) == 4 and batch.episode_index.tolist() == [0, 0, 0, 0]
    assert all(row.sum() > 0 for row in batch.loss_mask)


def _target(seed):
    from tumbler import envs
    env = envs.make(GAME["id"], **GAME["kwargs"])
    env.reset(seed=seed)
    return env.unwrapped.target


def test_a_program_that_cannot_start_fails_the_run_at_once_with_its_output(tmp_path):
    from tumbler.train import Trainer
    from tumbler.train.trainer import RolloutFailed
    program = tmp_path / "broken.py"
    program.write_text("import no_such_module\n")
    cfg = build_config({
        "model": {"name": "tiny", "device": "cpu"}, "mode": "agent", "env": GAME,
        "agent": {"command": ["python3", "/root/broken.py"], "files": {"/root/broken.py": str(program)},
                  "image": "debian", "timeout_s": 30},
        "rollout": {"groups_per_step": 1, "group_size": 2}, "eval": {"episodes": 0},
        "steps": 1, "run_dir": str(tmp_path / "run")})
    trainer = Trainer(cfg)
    try:
        with pytest.raises(RolloutFailed, match="no_such_module"):
            trainer.train_step(1)
    finally:
        trainer.close()


def test_a_hung_program_is_cut_at_its_timeout_and_counted(tokenizer, tmp_path):
    from tumbler.train.agentmode import AgentPool
    program = tmp_path / "hang.py"
    program.write_text("import time\ntime.sleep(600)\n")
    agent = agent_config(["python3", "/root/hang.py"], {"/root/hang.py": str(program)}, timeout_s=3)
    policy = ScriptedPolicy(tokenizer, ["\\boxed{1}"])
    env = build_config({"env": GAME}).env
    with AgentPool(1, agent, env) as pool:
        (ep,), stats = pool.play(policy, ChatRenderer(tokenizer, policy.eot_id), [1], [0],
                                 GenerationParams(max_new_tokens=4))
    assert ep.error and "3 s" in ep.error and stats.failed_episodes == 1


def test_bad_agent_config_says_what_to_fix():
    from tumbler.train.config import TrainConfigError
    with pytest.raises(TrainConfigError, match="agent.command"):
        build_config({"mode": "agent"})
    with pytest.raises(TrainConfigError, match="agent.wave_s"):
        build_config({"mode": "agent", "agent": {"command": ["x"], "wave_s": 0}})


def test_training_in_agent_mode_with_the_tiny_model(tmp_path):
    """Two steps of GRPO where every episode is a run of the urllib example program."""
    from tumbler.train import Trainer
    cfg = build_config({
        "model": {"name": "tiny", "device": "cpu"}, "mode": "agent", "env": GAME,
        "agent": urllib_agent().model_dump(),
        "rollout": {"groups_per_step": 2, "group_size": 2, "max_turns": 4, "max_new_tokens": 6,
                    "temperature": 1.0},
        "algorithm": {"skip_uniform_groups": False},
        "eval": {"episodes": 2}, "steps": 2, "run_dir": str(tmp_path / "run")})
    result = Trainer(cfg).run()
    assert result.steps == 2 and [h["episodes"] for h in result.history] == [4, 4]
    assert all(h["failed_episodes"] == 0 and h["trained_sequences"] >= 4 for h in result.history)
    assert result.eval_before is not None and result.eval_after is not None


def test_the_openai_example_program_plays_in_agent_mode(tokenizer):
    """examples/openai_agent.py, unmodified, with the `openai` package in its image, answered by
    the trainer: what examples/train/agent.yaml trains."""
    from tumbler.runtime.images import ImageStore
    from tumbler.train.agentmode import AgentPool
    from tumbler.train.config import load_config
    if not ImageStore().exists("openai"):
        pytest.skip("no 'openai' image: make openai-image (make test builds it)")
    cfg = load_config(EXAMPLES / "train" / "agent.yaml")
    agent = cfg.agent.model_copy(update={"files": {"/root/openai_agent.py": str(EXAMPLES / "openai_agent.py")}})
    policy = ScriptedPolicy(tokenizer, searcher(tokenizer))
    with AgentPool(2, agent, cfg.env) as pool:
        episodes, stats = pool.play(policy, ChatRenderer(tokenizer, policy.eot_id), [3, 4], [0, 1],
                                    GenerationParams(max_new_tokens=8), max_turns=3,
                                    turn_bonus=cfg.rollout.turn_bonus)
    assert [ep.error for ep in episodes] == [None, None]
    assert all(ep.success and ep.reward >= 1.0 for ep in episodes)
    assert stats.rewritten_histories == 0
    assert "Reply with only your guess" in episodes[0].transcript[0]["content"]
