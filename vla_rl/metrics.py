"""Metric logging: stdout, ``metrics.jsonl``, TensorBoard, Weights & Biases (offline unless asked
for and a key is present; it never prompts), and a learning-curve PNG redrawn every iteration."""

from __future__ import annotations

import json
import logging
import math
import os

logger = logging.getLogger("vla_rl.train")

# Panels of the learning-curve figure: (title, metric keys).
CURVES = (
    ("success rate (env only)", ("rollout/success_rate",)),
    ("return per episode", ("rollout/env_return", "rollout/return")),
    ("PRM", ("rollout/prm_score_mean", "reward/prm_reward_mean")),
    ("losses", ("train/policy_loss", "train/value_loss")),
    ("approx KL / clip fraction", ("train/approx_kl", "train/clipfrac")),
    ("env steps / s", ("perf/env_steps_per_s",)),
)
STDOUT_KEYS = (
    ("rollout/success_rate", "success"),
    ("rollout/env_return", "env_ret"),
    ("rollout/prm_score_mean", "prm"),
    ("train/policy_loss", "pi_loss"),
    ("train/value_loss", "v_loss"),
    ("train/approx_kl", "kl"),
    ("train/clipfrac", "clip"),
    ("perf/env_steps_per_s", "steps/s"),
)


class MetricLogger:
    def __init__(
        self,
        run_dir: str,
        config: dict,
        use_wandb: bool = False,
        wandb_offline: bool = True,
        wandb_project: str = "vla-rl",
        run_name: str = "run",
    ):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.curve_path = os.path.join(run_dir, "learning_curve.png")
        self.history: list[dict] = []
        if os.path.isfile(self.path):  # a resumed run keeps its history
            with open(self.path) as f:
                self.history = [json.loads(line) for line in f if line.strip()]
        self.tensorboard = SummaryWriter(os.path.join(run_dir, "tensorboard"))
        self.wandb = None
        if use_wandb:
            self.wandb = _start_wandb(run_dir, config, wandb_offline, wandb_project, run_name)

    def log(self, metrics: dict, step: int) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items() if v is not None}}
        self.history.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if key != "step" and math.isfinite(value):
                self.tensorboard.add_scalar(key, value, step)
        self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=step)
        self.plot()

    def line(self, metrics: dict) -> str:
        parts = []
        for key, label in STDOUT_KEYS:
            value = metrics.get(key)
            if value is not None and math.isfinite(value):
                parts.append(f"{label}={value:.4g}")
        return " ".join(parts)

    def plot(self) -> None:
        """Redraw the learning-curve PNG (atomically: a viewer never sees a half-written file)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(2, 3, figsize=(13, 6.5))
        x_key = "progress/episodes"
        for axis, (title, names) in zip(axes.flat, CURVES, strict=True):
            for name in names:
                points = [
                    (r.get(x_key, r["step"]), r[name]) for r in self.history if name in r and math.isfinite(r[name])
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    axis.plot(xs, ys, marker="o", markersize=3, label=name.split("/", 1)[1])
            axis.set_title(title)
            axis.set_xlabel("episodes")
            axis.grid(alpha=0.3)
            if axis.lines:
                axis.legend(fontsize=8)
            else:  # e.g. the PRM panel of a run without a PRM
                axis.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=axis.transAxes)
        figure.tight_layout()
        tmp = f"{self.curve_path}.tmp-{os.getpid()}.png"
        figure.savefig(tmp, dpi=80)
        plt.close(figure)
        os.replace(tmp, self.curve_path)

    def close(self) -> None:
        self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(run_dir: str, config: dict, offline: bool, project: str, name: str):
    """A wandb run; offline unless online was asked for and a key is configured. Never prompts."""
    try:
        import wandb
    except ImportError:
        logger.warning("--use_wandb True but wandb is not installed (pip install '.[wandb]'); skipping wandb.")
        return None
    has_key = bool(os.environ.get("WANDB_API_KEY")) or os.path.isfile(os.path.expanduser("~/.netrc"))
    mode = "online" if (not offline and has_key) else "offline"
    if not offline and not has_key:
        logger.warning("--wandb_offline False but no WANDB_API_KEY is set: logging to wandb offline.")
    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(project=project, name=name, dir=run_dir, config=config, mode=mode, resume="allow")
