"""The configuration of :mod:`vla_rl.sft` (behaviour cloning) and its command-line flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from vla_rl.cli import require_at_least, require_between, require_positive, str2bool
from vla_rl.policy.action_tokenizer import GREEDY_DECODINGS


@dataclass
class SFTConfig:
    data: list[str]
    vla_path: str
    out: str
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    label_sigma: float = 1.5
    grounding_weight: float = 0.0
    grounding_layer: int = 0  # 0: the middle of the stack
    relation_weight: float = 0.0
    localisation_weight: float = 0.0
    localisation_episodes: int = 100
    relabel: bool = False
    vision_lr_scale: float = 1.0
    dagger_rounds: int = 0
    dagger_episodes: int = 100
    dagger_steps: int = 1000
    dagger_beta: float = 0.5
    dagger_max_steps: int = 0
    dagger_decoding: str = "mean"
    dagger_tasks: list | None = None
    use_state: bool = True
    labels: str = "expert"
    tasks: list | None = None
    seed: int = 0
    eval_episodes: int = 50
    overwrite: bool = False
    threads: int = 0

    def validate(self) -> None:
        for path in self.data:
            if not os.path.isfile(os.path.join(path, "meta.json")):
                raise FileNotFoundError(
                    f"--data {path}: no demonstrations there (meta.json missing); record some with "
                    "`python -m envs.demos --tasks reach --episodes 300 --out DIR`."
                )
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"--steps and --batch_size must be >= 1, got {self.steps} and {self.batch_size}.")
        require_positive(self.learning_rate, "--learning_rate")
        if self.labels not in ("expert", "executed"):
            raise ValueError(f"--labels must be 'expert' or 'executed', got {self.labels!r}.")
        if self.label_sigma < 0:
            raise ValueError(f"--label_sigma must be >= 0, got {self.label_sigma}.")
        require_at_least(self.grounding_weight, 0, "--grounding_weight")
        require_at_least(self.grounding_layer, 0, "--grounding_layer")
        require_at_least(self.relation_weight, 0, "--relation_weight")
        require_at_least(self.vision_lr_scale, 0, "--vision_lr_scale")
        require_at_least(self.localisation_weight, 0, "--localisation_weight")
        if self.localisation_weight > 0 and self.vision_lr_scale == 0:
            raise ValueError(
                "--localisation_weight keeps a trained vision tower's localisation; with --vision_lr_scale 0 the "
                "tower is frozen and keeps it anyway: set --localisation_weight 0 or --vision_lr_scale > 0."
            )
        require_at_least(self.localisation_episodes, 1, "--localisation_episodes")
        if self.dagger_rounds < 0 or self.dagger_episodes < 1 or self.dagger_steps < 1 or self.dagger_max_steps < 0:
            raise ValueError(
                "--dagger_rounds and --dagger_max_steps must be >= 0, --dagger_episodes and --dagger_steps >= 1."
            )
        if self.dagger_decoding not in GREEDY_DECODINGS:
            raise ValueError(f"--dagger_decoding must be one of {GREEDY_DECODINGS}, got {self.dagger_decoding!r}.")
        require_between(self.dagger_beta, 0, 1, "--dagger_beta")
        if self.eval_episodes < 0:
            raise ValueError(f"--eval_episodes must be >= 0, got {self.eval_episodes}.")
        if os.path.exists(self.out) and not self.overwrite:
            raise FileExistsError(f"--out {self.out} already exists; pass --overwrite to replace it.")


def build_parser(description: str) -> argparse.ArgumentParser:
    """The ``python -m vla_rl.sft`` flags, one per :class:`SFTConfig` field, with its defaults."""
    parser = argparse.ArgumentParser(prog="python -m vla_rl.sft", description=description)
    parser.add_argument("--data", nargs="+", required=True, help="demonstration directories (envs.demos format)")
    parser.add_argument("--vla_path", required=True, help="initial Qwen2-VL checkpoint (python -m vla_rl.qwen.build)")
    parser.add_argument("--out", required=True, help="output policy checkpoint directory")
    defaults = SFTConfig(data=[], vla_path="", out="")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps")
    parser.add_argument("--batch_size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning_rate", type=float, default=defaults.learning_rate, help="AdamW peak rate")
    parser.add_argument("--weight_decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--warmup_steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--label_sigma", type=float, default=defaults.label_sigma, help="soft-target width, bins")
    parser.add_argument(
        "--grounding_weight",
        type=float,
        default=defaults.grounding_weight,
        help="weight of the grounding loss at the prompt's colour words (0: off; needs demos with colour_positions)",
    )
    parser.add_argument(
        "--grounding_layer",
        type=int,
        default=defaults.grounding_layer,
        help="hidden state the grounding loss reads (1 = after the first layer; 0: the middle of the stack)",
    )
    parser.add_argument(
        "--relation_weight",
        type=float,
        default=defaults.relation_weight,
        help="weight of the relation loss at the last prompt position: how the named object stands to the gripper "
        "and to its destination (vla_rl.grounding.RelationLoss; 0: off; needs demos with colour_positions)",
    )
    parser.add_argument(
        "--localisation_weight",
        type=float,
        default=defaults.localisation_weight,
        help="weight of the vision pretraining's localisation loss on the tower while it is cloned "
        "(vla_rl.vision_pretrain; 0: off; needs --vision_lr_scale > 0)",
    )
    parser.add_argument(
        "--localisation_episodes",
        type=int,
        default=defaults.localisation_episodes,
        help="noisy-expert episodes per task recorded for --localisation_weight",
    )
    parser.add_argument(
        "--relabel",
        type=str2bool,
        default=defaults.relabel,
        help="add the demos' counterfactual samples (same frame, another object named, the expert's action for it)",
    )
    parser.add_argument(
        "--vision_lr_scale",
        type=float,
        default=defaults.vision_lr_scale,
        help="learning rate of the vision tower relative to the rest (0 freezes it, e.g. after vla_rl.vision_pretrain)",
    )
    parser.add_argument("--use_state", type=str2bool, default=defaults.use_state, help="read the proprio state")
    parser.add_argument(
        "--labels",
        choices=("expert", "executed"),
        default=defaults.labels,
        help="clone the expert's noise-free actions or the executed (noisy) ones",
    )
    parser.add_argument("--tasks", nargs="+", default=None, help="train on these tasks' episodes only")
    parser.add_argument("--dagger_rounds", type=int, default=defaults.dagger_rounds, help="DAgger rounds after cloning")
    parser.add_argument(
        "--dagger_episodes", type=int, default=defaults.dagger_episodes, help="policy episodes per task per round"
    )
    parser.add_argument(
        "--dagger_tasks",
        nargs="+",
        default=None,
        help="tasks whose policy episodes DAgger labels (default: every task of the data); cloning still "
        "samples all of the data",
    )
    parser.add_argument(
        "--dagger_steps", type=int, default=defaults.dagger_steps, help="cloning steps after each DAgger round"
    )
    parser.add_argument(
        "--dagger_beta", type=float, default=defaults.dagger_beta, help="expert share of round 1 (halved per round)"
    )
    parser.add_argument(
        "--dagger_max_steps",
        type=int,
        default=defaults.dagger_max_steps,
        help="longest DAgger rollout episode (0: each task's own step limit)",
    )
    parser.add_argument(
        "--dagger_decoding",
        choices=GREEDY_DECODINGS,
        default=defaults.dagger_decoding,
        help="how the policy's DAgger actions are decoded: as the evaluation does (mean: nearest the expected bin) "
        "or the most likely bins",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval_episodes", type=int, default=defaults.eval_episodes, help="held-out seeds per task")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser
