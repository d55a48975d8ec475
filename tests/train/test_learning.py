"""SmolLM2-135M-Instruct learns GuessTheNumber with GRPO (the demo's config, in process)."""
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_held_out_success_rises(tmp_path):
    from tumbler.train import Trainer, load_config
    config = Path(__file__).parents[2] / "examples/train/guess.yaml"
    cfg = load_config(config, ["env.hosted=false", f"run_dir={tmp_path}/run", "save_final=false"])
    result = Trainer(cfg).run()
    before, after = result.eval_before["success_rate"], result.eval_after["success_rate"]
    assert after >= before + 0.2, (before, after)
