"""The process reward model's part of the training configuration: which PRM, how its score
becomes a reward, and which frames it scores — the size and camera of its training frames,
read from the ``prm_config.json`` that ``reward.train_prm`` writes beside it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from assets import MODELS
from reward.base import BUILTIN_PRMS
from vla_rl.cli import require_frame_side

DEFAULT_PRM = os.path.join(MODELS, "prm-small")


def default_prm() -> str:
    """The embedded small PRM when it ships, else the logged DummyRM."""
    return DEFAULT_PRM if os.path.isfile(os.path.join(DEFAULT_PRM, "config.json")) else "dummy"


@dataclass
class PRMConfig:
    process_reward_model: bool = field(default=True, metadata={"help": "add the PRM reward (True/False)"})
    prm_model_name_or_path: str = field(
        default="", metadata={"help": f"PRM checkpoint directory or {BUILTIN_PRMS} (default: the embedded PRM)"}
    )
    prm_checkpoint_path: str = field(default="", metadata={"help": "LoRA adapter directory for the PRM"})
    prm_reward_weight: float = field(default=1.0, metadata={"help": "weight w of the PRM term"})
    prm_reward_mode: str = field(
        default="potential",
        metadata={
            "help": "potential (w * (gamma * p' - p): pays for rises in P(completed); gamma is 1 under "
            "--advantage_estimator grpo|rloo, whose returns are undiscounted) | binary | prob"
        },
    )
    prm_threshold: float = field(
        default=0.0,
        metadata={
            "help": "P(completed) threshold of binary mode and of the videos (0: the PRM's decision threshold, tuned "
            "on its validation split and recorded in its prm_config.json, else 0.5)"
        },
    )
    prm_score_window: int = field(
        default=0,
        metadata={
            "help": "average each frame's P(completed) with the episode's previous scores over this many frames "
            "(causal; 1: each frame alone; 0: the PRM's own window, chosen with its threshold on its validation "
            "split and recorded in its prm_config.json, else 1)"
        },
    )
    prm_deferred: bool = field(default=True, metadata={"help": "score a whole rollout at once (True/False)"})
    prm_image_size: int = field(
        default=0,
        metadata={
            "help": "side of the frames the PRM scores, rendered beside the policy's (0: the size the PRM was "
            "trained on, from its prm_config.json, else the policy's frames)"
        },
    )

    def resolved_model(self) -> str:
        return self.prm_model_name_or_path or default_prm()

    def frame_size(self) -> int | None:
        """The side of the frames the PRM scores: ``--prm_image_size``, else the image size of the
        PRM's training set (its ``prm_config.json``), else ``None`` (it scores the policy's frames)."""
        if not self.process_reward_model:
            return None
        return self.prm_image_size or self.trained_config().get("image_size") or None

    def frame_camera(self) -> str | None:
        """The env camera of the frames the PRM scores: the camera of its training set (its
        ``prm_config.json``; ``"wrist"`` for a PRM trained on the eye-in-hand view), else ``None``
        (it scores the policy's frames)."""
        if not self.process_reward_model:
            return None
        from reward.qwen_prm import trained_camera

        return trained_camera(self.trained_config())

    def trained_config(self) -> dict:
        """The PRM's ``prm_config.json`` (its adapter's first); ``{}`` for a built-in PRM or none."""
        model = self.resolved_model()
        if model in BUILTIN_PRMS:
            return {}
        from reward.qwen_prm import trained_prm_config

        return trained_prm_config(self.prm_checkpoint_path or None, model)

    def decision_threshold(self) -> float:
        """``--prm_threshold``, else the threshold in the PRM's ``prm_config.json``, else 0.5."""
        if self.prm_threshold:
            return self.prm_threshold
        return float(self.trained_config().get("decision_threshold", 0.5)) if self.process_reward_model else 0.5

    def score_window(self) -> int:
        """``--prm_score_window``, else the window in the PRM's ``prm_config.json``, else 1."""
        if self.prm_score_window:
            return self.prm_score_window
        return int(self.trained_config().get("score_window", 1)) if self.process_reward_model else 1

    def validate(self) -> None:
        from reward.shaping import Shaping

        if not 0.0 <= self.prm_threshold < 1.0:
            raise ValueError(f"--prm_threshold must be in [0, 1) (0: the PRM's own), got {self.prm_threshold}.")
        if isinstance(self.prm_score_window, bool) or not 0 <= self.prm_score_window <= 64:
            raise ValueError(
                f"--prm_score_window must be 0 (the PRM's own) or 1..64 frames, got {self.prm_score_window}."
            )
        Shaping(self.prm_reward_weight, self.prm_reward_mode, 0.5)
        require_frame_side(self.prm_image_size, "--prm_image_size")
        if not self.process_reward_model:
            return
        model = self.resolved_model()
        if model not in BUILTIN_PRMS:
            from vla_rl.qwen.loading import read_checkpoint_config

            read_checkpoint_config(model, "--prm_model_name_or_path")
        if self.prm_checkpoint_path and not os.path.isdir(self.prm_checkpoint_path):
            raise FileNotFoundError(f"--prm_checkpoint_path {self.prm_checkpoint_path!r}: no such directory.")
        if self.prm_checkpoint_path and model in BUILTIN_PRMS:
            raise ValueError(f"--prm_checkpoint_path needs a Qwen2-VL --prm_model_name_or_path, not {model!r}.")
        if self.prm_image_size:
            trained = self.trained_config().get("image_size")
            if trained and trained != self.prm_image_size:
                raise ValueError(
                    f"--prm_image_size {self.prm_image_size}: this PRM was trained on {trained}-px frames; "
                    f"leave the flag at 0 (its size) or pass {trained}."
                )
