"""A run's directory: config.yaml (resolved), metrics.jsonl, eval.jsonl, tensorboard/ (the same
numbers as TensorBoard scalars: `tensorboard --logdir runs`), episodes/, curve.png, checkpoints/."""
from __future__ import annotations

import json
import time
from pathlib import Path


class RunDir:
    def __init__(self, pattern: str, tensorboard: bool = True):
        self.path = Path(pattern.replace("{time}", time.strftime("%Y%m%d-%H%M%S")))
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.path / "episodes").mkdir(exist_ok=True)
        self.tensorboard, self._writer, self._purge = tensorboard, None, None

    def write_config(self, config) -> None:
        import yaml
        (self.path / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))

    def log(self, name: str, record: dict) -> None:
        """Append one JSON line to NAME.jsonl (metrics, eval), and its numbers to TensorBoard
        as NAME/KEY at the record's step."""
        with open(self.path / f"{name}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard:
            writer = self._tensorboard()
            step = int(record.get("step", 0))
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"{name}/{key}", value, step)
            writer.flush()

    def _tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter
            # purge_step: a resumed run hides the events a killed one wrote past its checkpoint
            self._writer = SummaryWriter(str(self.path / "tensorboard"), purge_step=self._purge)
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_episodes(self, step: int, episodes, count: int = 3) -> None:
        """A few rendered episodes of this step, to read what the policy does."""
        rows = [{"seed": ep.seed, "reward": ep.reward, "success": ep.success, "turns": ep.turns,
                 "error": ep.error, "chat": ep.transcript} for ep in episodes[:count]]
        (self.path / "episodes" / f"step-{step:04d}.json").write_text(json.dumps(rows, indent=1))

    def truncate(self, step: int) -> None:
        """Drop the log lines of steps after `step` (a resume plays them again)."""
        self._purge = step + 1
        for name in ("metrics", "eval"):
            kept = [r for r in self.read(name) if r.get("step", 0) <= step]
            path = self.path / f"{name}.jsonl"
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            tmp.replace(path)

    def read(self, name: str) -> list[dict]:
        path = self.path / f"{name}.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:     # the half line a kill cut short
                break
        return rows

    def plot(self) -> Path:
        """curve.png: training reward and success per step, held-out success at evaluations."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        metrics, evals = self.read("metrics"), self.read("eval")
        fig, ax = plt.subplots(figsize=(7, 4))
        if metrics:
            steps = [m["step"] for m in metrics]
            ax.plot(steps, [m["reward_mean"] for m in metrics], label="train reward")
            ax.plot(steps, [m["success_rate"] for m in metrics], label="train success")
        if evals:
            ax.plot([e["step"] for e in evals], [e["success_rate"] for e in evals], "o-",
                    label="held-out success")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
        out = self.path / "curve.png"
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out
