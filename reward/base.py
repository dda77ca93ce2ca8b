"""The process-reward-model contract and the simple implementations.

Every PRM maps a batch of frames (each observed *after* an action) and their instructions to
the probability that the task is completed::

    score(frames: (B, H, W, 3) uint8, instructions: list[str] (B), infos: list[dict] | None)
        -> np.ndarray float32 (B,) in [0, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from vla_rl import keys

logger = logging.getLogger("vla_rl.prm")


def as_frame_batch(frames) -> np.ndarray:
    """``frames`` as a ``(B, H, W, 3) uint8`` array; a list of frames is stacked."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            return np.zeros((0, 1, 1, 3), np.uint8)
        shapes = {np.shape(f) for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"frames must all have the same shape, got {sorted(shapes)}.")
        frames = np.stack([np.asarray(f) for f in frames])
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array or a list of arrays, got {type(frames).__name__}.")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB images, got dtype {frames.dtype}.")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (B, H, W, 3), got {frames.shape}.")
    return frames


class ProcessRewardModel:
    """Base class: validates inputs, then calls :meth:`_score`."""

    name = "prm"
    image_size: int | None = None  # the frame side it was trained on, where that is known
    camera: str | None = None  # the env camera of its training frames, where that is known (None: the policy's)
    threshold: float = 0.5  # P(completed) at or above which it calls a frame completed
    score_window: int = 1  # causal window its scores are averaged over in an episode (reward.prm_metrics)

    def score(self, frames, instructions: Sequence[str], infos: Sequence[dict] | None = None) -> np.ndarray:
        """``float32 (B,)`` probabilities in [0, 1] that each frame shows its task completed."""
        frames = as_frame_batch(frames)
        if isinstance(instructions, str):
            raise ValueError("instructions must be a list of strings (one per frame), not a single string.")
        instructions = list(instructions)
        if len(instructions) != len(frames):
            raise ValueError(f"got {len(frames)} frames but {len(instructions)} instructions; they must match.")
        if infos is not None and len(infos) != len(frames):
            raise ValueError(f"got {len(frames)} frames but {len(infos)} infos; they must match.")
        if len(frames) == 0:
            return np.zeros(0, np.float32)
        scores = np.asarray(self._score(frames, instructions, infos), dtype=np.float32)
        assert scores.shape == (len(frames),), f"{type(self).__name__} returned shape {scores.shape}"
        return np.clip(scores, 0.0, 1.0)

    def _score(self, frames: np.ndarray, instructions: list[str], infos: list[dict] | None) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (models, servers)."""


def require_prm(prm) -> ProcessRewardModel:
    """``prm`` itself, or a TypeError if it does not follow the contract."""
    if not isinstance(prm, ProcessRewardModel):
        raise TypeError(f"prm must be a ProcessRewardModel, got {type(prm).__name__}.")
    return prm


class DummyRM(ProcessRewardModel):
    """Scores every frame 0: the PRM term vanishes. Used when no PRM model is configured."""

    name = "dummy"

    def __init__(self):
        logger.warning(
            "[PRM] Using DummyRM: every frame scores 0.0, so the process reward adds nothing. "
            "Pass a Qwen2-VL checkpoint (--prm_model_name_or_path) for a real process reward."
        )

    def _score(self, frames, instructions, infos):
        return np.zeros(len(frames), np.float32)


class OracleRM(ProcessRewardModel):
    """Reads the simulator's privileged signals from ``infos``: the upper bound for experiments.

    Args:
        signal: ``"success"`` (1.0 once the task is completed, else 0.0) or ``"progress"``
            (the staged progress in [0, 1]).
    """

    name = "oracle"

    def __init__(self, signal: str = "success"):
        if signal not in ("success", "progress"):
            raise ValueError(f"OracleRM signal must be 'success' or 'progress', got {signal!r}.")
        self.signal = signal

    def _score(self, frames, instructions, infos):
        if infos is None:
            raise ValueError("OracleRM needs the step infos (with 'success'/'progress'); pass infos=.")
        key = keys.SUCCESS if self.signal == "success" else keys.PROGRESS
        missing = [i for i, info in enumerate(infos) if key not in info]
        if missing:
            raise ValueError(f"OracleRM: infos {missing[:5]} have no {key!r} entry.")
        return np.array([float(info[key]) for info in infos], np.float32)


class RandomRM(ProcessRewardModel):
    """A control: scores are uniform in [0, 1], above 0.5 with probability ``positive_rate``.

    Seeded, so that runs with it are reproducible.
    """

    name = "random"

    def __init__(self, positive_rate: float = 0.5, seed: int = 0):
        if not 0.0 <= positive_rate <= 1.0:
            raise ValueError(f"RandomRM positive_rate must be in [0, 1], got {positive_rate}.")
        self.positive_rate = positive_rate
        self.rng = np.random.default_rng(seed)

    def _score(self, frames, instructions, infos):
        positive = self.rng.random(len(frames)) < self.positive_rate
        magnitude = self.rng.random(len(frames)) * 0.5
        return np.where(positive, 0.5 + magnitude, 0.5 - magnitude - 1e-6).astype(np.float32)


BUILTIN_PRMS = ("dummy", "oracle", "oracle_progress", "random")


def builtin_prm(name: str, seed: int = 0) -> ProcessRewardModel:
    """The built-in PRM called ``name`` (one of ``BUILTIN_PRMS``): a DummyRM, the privileged
    success / progress oracles, or a seeded RandomRM."""
    factories = {
        "dummy": DummyRM,
        "oracle": lambda: OracleRM("success"),
        "oracle_progress": lambda: OracleRM("progress"),
        "random": lambda: RandomRM(seed=seed),
    }
    if name not in factories:
        raise ValueError(f"unknown built-in PRM {name!r}; choose one of {BUILTIN_PRMS}.")
    return factories[name]()
