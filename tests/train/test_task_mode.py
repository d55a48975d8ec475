"""Agent mode on task sets: each episode is a trial of a shipped task, in real sandboxes, its
program's model calls answered by a scripted policy, its reward the task's isolated verifier.

The program in the default run is the bash agent's loop in the standard library
(tests/agentloops.py; nothing to install: the tasks' images have python3), as a program .toml
under the agents' contract; the shipped `bash` program itself (the openai package installed at
build time) is the slow test."""
import json
import re
from pathlib import Path

import pytest

from tumbler.train import toolcalls
from tumbler.train.chat import ChatRenderer
from tumbler.train.config import TrainConfigError, build_config
from tumbler.train.policy import GenerationParams
from tumbler.train.scripted import ScriptedPolicy

from agentloops import STDLIB_AGENT

FIX = "chmod 755 /opt/report/bin/make-report && chown app:app /srv/reports"
CHEAT = ("mkdir -p /logs/verifier /tests && echo 1 > /logs/verifier/reward.txt && "
         "printf '#!/bin/bash\\necho 1 > /logs/verifier/reward.txt\\n' > /tests/test.sh && "
         "echo 'echo 1 > /logs/verifier/reward.txt' >> /root/.bashrc")

# the stdlib bash loop, then a claim of success the trainer must never read
AGENT = STDLIB_AGENT + 'print(json.dumps({"reward": 1.0, "solved": True}))\n'


def tool_call(command: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": "bash", "arguments": {"command": command}}) + \
        "\n</tool_call>"


def program_file(tmp_path, code=AGENT) -> str:
    path = tmp_path / "stdlib-bash.toml"
    path.write_text('name = "stdlib-bash"\ncommand = \'python3 -c "$AGENT_CODE" {prompt_file} {model}\'\n'
                    f"[env]\nAGENT_CODE = {json.dumps(code)}\n")
    return str(path)


def agent_section(tmp_path, **extra) -> dict:
    return {"tasks": "devops", "program": program_file(tmp_path), "timeout_s": 60,
            "wave_s": 0.3, **extra}


def scripted(tokenizer, first: str, then: str = "Done."):
    """Turn 0: `first`; later turns: `then` (a turn without a tool call ends the agent)."""
    return ScriptedPolicy(tokenizer, lambda ep, turn, ids: first if turn == 0 else then)


def test_tool_calls_read_from_the_reply_text_and_written_back(tokenizer):
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    text = "Let me fix it.\n" + tool_call("ls /srv") + "\n<tool_call>{not json}</tool_call>" + \
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    content, calls = toolcalls.parse(text, tools)
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"command": "ls /srv"}]
    assert calls[0]["function"]["name"] == "bash" and calls[0]["id"].startswith("call_")
    assert content.startswith("Let me fix it.") and "{not json}" in content and "rm_rf" in content
    assert toolcalls.parse("no call here", tools) == ("no call here", [])
    assert toolcalls.parse(tool_call("x"), [])[1] == []        # nothing offered: plain text
    content, calls = toolcalls.parse(tool_call("pwd"), tools)
    assert content is None and len(calls) == 1
    # written back as the policy wrote it, and repeated by a client the same (None == "")
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    assert toolcalls.as_text(message)["content"] == tool_call("pwd")
    echoed = {"role": "assistant", "tool_calls": [{**calls[0], "function": {
        "name": "bash", "arguments": json.dumps({"command": "pwd"}, indent=2)}}], "refusal": None}
    assert toolcalls.message_key(echoed) == toolcalls.message_key(message)
    # SmolLM2's template ignores tools: they are described in the system message
    chat, passed = toolcalls.for_template([{"role": "user", "content": "hi"}], tools,
                                          tokenizer.chat_template)
    assert passed is None and chat[0]["role"] == "system" and '"name": "bash"' in chat[0]["content"]
    assert "<tool_call>" in ChatRenderer(tokenizer, tokenizer.eos_token_id).tokenizer.decode(
        ChatRenderer(tokenizer, tokenizer.eos_token_id).full_render(chat))


def test_task_episodes_earn_the_verifiers_reward_never_the_agents_claim(tokenizer, tmp_path):
    """wrong-permission through real sandboxes: the scripted fix earns 1, doing nothing 0, and
    a planted success (the program writes the reward file, a test script, a shell startup
    line, and prints a reward) earns 0. Trained tokens are exactly the generated ones."""
    from tumbler.train.taskmode import TaskPool
    agent = build_config({"mode": "agent", "agent": agent_section(
        tmp_path, task_ids=["wrong-permission"], heldout=[])}).agent
    params = GenerationParams(max_new_tokens=128)
    outcomes = {}
    with TaskPool(2, agent, heldout_seed=1000) as pool:
        assert [t.id for t in pool.train] == ["wrong-permission"] and pool.heldout == []
        for name, first in [("fix", tool_call(FIX)), ("nothing", "I am done."),
                            ("cheat", tool_call(CHEAT))]:
            policy = scripted(tokenizer, first)
            renderer = ChatRenderer(tokenizer, policy.eot_id)
            episodes, stats = pool.play(policy, renderer, [3, 3], [0, 0], params, max_turns=4)
            outcomes[name] = [(ep.reward, ep.success, ep.error) for ep in episodes]
            assert stats.rewritten_histories == 0 and stats.failed_episodes == 0, outcomes
            for ep in episodes:
                assert len(ep.sequences()) == 1
                replies = [m["content"] for m in ep.transcript if m["role"] == "assistant"]
                trained = [t for t, m in zip(ep.token_ids, ep.mask) if m]
                assert trained == [t for r in replies for t in
                                   tokenizer(r, add_special_tokens=False).input_ids + [policy.eot_id]]
                # the policy saw the tool described, and the tool's result came back as a turn
                prompt = tokenizer.decode(ep.token_ids)
                assert "<tools>" in prompt and "report job" in prompt
                if first != "I am done.":
                    assert ep.turns == 2 and "exit code: 0" in prompt
        assert pool.sandboxes == [] and pool.results[0]["task"] == "wrong-permission"
        # at the turn limit the program is stopped, and what it did is verified all the same
        policy = scripted(tokenizer, tool_call(FIX))
        (ep,), _ = pool.play(policy, ChatRenderer(tokenizer, policy.eot_id), [3], [0], params,
                             max_turns=1)
        outcomes["cut"] = [(ep.reward, ep.success, ep.error)]
        assert ep.turns == 1
    assert outcomes == {"fix": [(1.0, True, None)] * 2, "nothing": [(0.0, False, None)] * 2,
                        "cheat": [(0.0, False, None)] * 2, "cut": [(1.0, True, None)]}


def test_swe_rows_are_judged_by_their_tests_not_the_agents_edits_to_them(tokenizer, tmp_path):
    """swe-mini (SWE-style rows): a one-line fix of tinytext-2 resolves it; rewriting
    tinytext-1's tests (and planting a conftest.py) to pass resolves nothing."""
    from tumbler.train.taskmode import TaskPool
    fix = "sed -i 's/total = int(number)/total += int(number)/' tinytext/duration.py"
    names = ["punctuation_makes_one_dash", "no_dash_at_the_ends", "single_word", "two_words",
             "accents_are_dropped"]     # every test of the file it rewrites, made to pass
    cheat = ("printf '" + "".join(f"def test_{n}(): pass\\n" for n in names) +
             "' > tests/test_slug.py && printf 'import pytest\\n' > conftest.py")

    def reply(ep, turn, ids):
        if turn > 0:
            return "Done."
        return tool_call(fix if "parse_duration" in tokenizer.decode(ids) else cheat)
    agent = build_config({"mode": "agent", "agent": agent_section(
        tmp_path, tasks="swe-mini", heldout_fraction=0)}).agent
    policy = ScriptedPolicy(tokenizer, reply)
    with TaskPool(2, agent) as pool:
        seeds = [0, 1]                                   # one pass: both rows
        assert {pool.task_of(s).id for s in seeds} == {"tinytext-1", "tinytext-2"}
        episodes, stats = pool.play(policy, ChatRenderer(tokenizer, policy.eot_id), seeds,
                                    [0, 1], GenerationParams(max_new_tokens=128), max_turns=3)
        outcome = {r["task"]: (r["reward"], r["error"], r["turns"]) for r in pool.results}
    assert outcome == {"tinytext-2": (1.0, None, 2), "tinytext-1": (0.0, None, 2)}, outcome


def harbor(root: Path, name: str, dockerfile="FROM debian:bookworm\nWORKDIR /root\n",
           test_sh="#!/bin/bash\nmkdir -p /logs/verifier; echo 0 > /logs/verifier/reward.txt\n"):
    d = root / name
    (d / "environment").mkdir(parents=True)
    (d / "tests").mkdir()
    (d / "task.toml").write_text('version = "1.0"\n[agent]\ntimeout_sec = 30\n'
                                 '[verifier]\ntimeout_sec = 10\n[environment]\nmemory_mb = 512\n')
    (d / "instruction.md").write_text(f"Task {name}: write 42 to /root/answer.txt.")
    (d / "environment" / "Dockerfile").write_text(dockerfile)
    (d / "tests" / "test.sh").write_text(test_sh)
    return d


def test_a_broken_image_verifier_or_program_fails_its_episodes_not_the_run(tokenizer, tmp_path):
    from tumbler.train.taskmode import TaskPool
    root = tmp_path / "set"
    harbor(root, "fine")
    harbor(root, "no-build", dockerfile="FROM debian:bookworm\nRUN exit 7\n")
    harbor(root, "no-verdict", test_sh="#!/bin/bash\nexit 3\n")
    agent = build_config({"mode": "agent", "agent": agent_section(
        tmp_path, tasks=str(root), heldout=["fine"])}).agent
    policy = scripted(tokenizer, tool_call("echo 42 > /root/answer.txt"))
    renderer = ChatRenderer(tokenizer, policy.eot_id)
    with TaskPool(3, agent, heldout_seed=1000) as pool:
        seeds = [0, 1, 1000]                  # both training tasks, then the held-out one
        assert {pool.task_of(s).id for s in seeds[:2]} == {"no-build", "no-verdict"}
        assert pool.task_of(1000).id == pool.task_of(1001).id == "fine"
        episodes, stats = pool.play(policy, renderer, seeds, [0, 1, 2],
                                    GenerationParams(max_new_tokens=64), max_turns=3)
        by_task = {r["task"]: r for r in pool.results}
        assert stats.failed_episodes == 2
        assert by_task["no-build"]["error"].startswith("build_error: task no-build")
        assert by_task["no-verdict"]["error"].startswith("verifier_error: task no-verdict")
        assert "exit code 3" in by_task["no-verdict"]["error"]
        assert by_task["fine"]["error"] is None and by_task["fine"]["reward"] == 0.0
        # the failed build is remembered: the next play fails it at once
        pool.play(policy, renderer, [seeds[0]], [0], GenerationParams(max_new_tokens=64))
        assert pool.results[0]["error"] == by_task[pool.results[0]["task"]]["error"]
    crash = build_config({"mode": "agent", "agent": {**agent_section(tmp_path, tasks=str(root)),
                                                    "program": program_file(tmp_path, "import nope\n"),
                                                    "heldout": ["no-build", "no-verdict"]}}).agent
    with TaskPool(1, crash) as pool:
        (ep,), stats = pool.play(policy, renderer, [0], [0], GenerationParams(max_new_tokens=8))
    assert stats.failed_episodes == 1 and "before any model call" in ep.error and "nope" in ep.error


class ScriptedTiny:
    """The tiny model for the update, a table for generation: the trainer runs as with a model."""

    def __init__(self, policy, replies):
        self.__dict__["_policy"] = policy
        self.__dict__["_scripted"] = ScriptedPolicy(policy.tokenizer, replies)

    def open_batch(self, n):
        return self._scripted.open_batch(n)

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def __setattr__(self, name, value):
        setattr(self._policy, name, value)


def test_training_on_a_task_set_evaluates_on_held_out_tasks(tmp_path):
    """`tumbler train` on devops: a group of the task the script solves earns 1s, a group of one
    it does nothing for earns 0s; the evaluation plays only the held-out task."""
    from tumbler.train import Trainer
    from tumbler.train.policy import HFPolicy
    tiny = HFPolicy.load("tiny", device="cpu", seed=0)

    def reply(ep, turn, ids):
        if turn > 0:
            return "Done."
        return tool_call(FIX) if "report job" in tiny.tokenizer.decode(ids) else "Nothing to do."
    cfg = build_config({
        "model": {"name": "tiny", "device": "cpu"}, "mode": "agent",
        "agent": agent_section(tmp_path, task_ids=["wrong-permission", "stale-lock", "cron-schedule"],
                               heldout=["cron-schedule"]),
        "rollout": {"groups_per_step": 2, "group_size": 2, "max_turns": 3, "max_new_tokens": 64},
        "algorithm": {"skip_uniform_groups": False}, "eval": {"episodes": 1, "seed": 1000},
        "steps": 1, "run_dir": str(tmp_path / "run"), "save_final": False, "tensorboard": False})
    trainer = Trainer(cfg, policy=ScriptedTiny(tiny, reply))
    try:
        result = trainer.run()
    finally:
        trainer.close()
    [step] = result.history
    assert step["failed_episodes"] == 0 and step["episodes"] == 4 and step["reward_mean"] == 0.5
    assert result.eval_before["success_rate"] == result.eval_after["success_rate"] == 0.0
    assert [r["task"] for r in trainer.envs.results] == ["cron-schedule"]
    assert (tmp_path / "run" / "config.yaml").read_text().count("cron-schedule") == 2


def test_task_mode_config_says_what_to_fix(tmp_path):
    with pytest.raises(TrainConfigError, match="agent.command: not with agent.tasks"):
        build_config({"mode": "agent", "agent": {"tasks": "devops", "command": ["x"]}})
    with pytest.raises(TrainConfigError, match="agent.reward: not with agent.tasks"):
        build_config({"mode": "agent", "agent": {"tasks": "devops", "reward": "replay"}})
    with pytest.raises(TrainConfigError, match="agent.reward: 'verifier' needs agent.tasks"):
        build_config({"mode": "agent", "agent": {"command": ["x"], "reward": "verifier"}})
    from tumbler.errors import InvalidRequest
    from tumbler.train.taskmode import TaskPool, split_tasks
    with pytest.raises(InvalidRequest, match="agent.heldout: no task nope"):
        TaskPool(1, build_config({"mode": "agent", "agent": {"tasks": "devops", "heldout": ["nope"]}}).agent)
    from tumbler.tasks.loader import load_tasks
    tasks = load_tasks("devops")
    train, held = split_tasks(tasks, [], 0.2)
    assert len(held) == 2 and len(train) == 8 and split_tasks(tasks, [], 0.2)[1] == held
    assert split_tasks(tasks, [], 0.0) == (tasks, [])


@pytest.mark.slow
def test_the_shipped_bash_program_trains_on_a_task(tokenizer, tmp_path):
    """The shipped bash agent (openai package, installed into the task's image at build time)
    answered by the trainer: the openai client's repeat of a tool-call answer continues the
    episode's sequence, and the fix earns the verifier's 1."""
    from tumbler.train.taskmode import TaskPool
    agent = build_config({"mode": "agent", "agent": {"tasks": "devops", "program": "bash",
                                                     "task_ids": ["wrong-permission"],
                                                     "heldout": [], "timeout_s": 120}}).agent
    policy = scripted(tokenizer, tool_call(FIX), "Fixed.")
    with TaskPool(2, agent) as pool:
        episodes, stats = pool.play(policy, ChatRenderer(tokenizer, policy.eot_id), [0, 0], [0, 0],
                                    GenerationParams(max_new_tokens=128), max_turns=4)
    assert [(ep.reward, ep.error) for ep in episodes] == [(1.0, None)] * 2
    assert stats.rewritten_histories == 0 and all(ep.turns == 2 for ep in episodes)
    assert re.search(r"exit code: 0", tokenizer.decode(episodes[0].token_ids))
