"""Turning PRM scores into rewards: ``r_t = r_env_t + weight * f(p)``.

``f`` by mode:

* ``binary`` — 1 if ``p >= threshold`` else 0 (the documented default behaviour);
* ``prob`` — ``p``;
* ``potential`` — ``gamma * p_{t+1} - p_t`` with ``p_t`` the score of the frame before the
  action (the reset frame at the first step); the potential of a terminal (terminated) state
  is 0, which keeps the shaping policy-invariant (Ng et al., 1999). Truncation is not
  terminal: the frame's score is used.

``window`` > 1 replaces each scored frame's P(completed) by the mean of it and the scores of
the ``window - 1`` frames of the same episode scored before it (``reward.prm_metrics.causal_mean``;
a PRM records the window it was tuned with in ``prm_config.json``): the score in ``info`` and
every mode use that mean.

:class:`ShapingState` holds the per-env state (previous score, held score, step counter) of
the vector and deferred paths, so that they produce the same rewards from the same scores; the
single-env wrapper keeps the same state in Python scalars (tests check all three agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODES = ("binary", "prob", "potential")


@dataclass(frozen=True)
class Shaping:
    """Validated shaping parameters (the ``--prm_reward_*`` flags)."""

    weight: float = 0.1
    mode: str = "binary"
    threshold: float = 0.5
    gamma: float = 0.99
    score_every: int = 1
    window: int = 1

    def __post_init__(self):
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)):
            raise TypeError(f"prm_reward_weight must be a number, got {type(self.weight).__name__}.")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"prm_reward_weight must be finite and >= 0, got {self.weight}.")
        if self.mode not in MODES:
            raise ValueError(f"prm_reward_mode must be one of {MODES}, got {self.mode!r}.")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"prm_threshold must be in [0, 1], got {self.threshold}.")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}.")
        if isinstance(self.score_every, bool) or not isinstance(self.score_every, int) or self.score_every < 1:
            raise ValueError(f"score_every must be an integer >= 1, got {self.score_every!r}.")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"prm_score_window must be an integer >= 1, got {self.window!r}.")

    def term(self, score, previous, terminated):
        """``f`` for scores after the action, previous scores and terminal flags: arrays, or
        Python scalars (then a float, for the single-env wrapper's fast path)."""
        if np.ndim(score) == 0:
            if self.mode == "binary":
                return 1.0 if score >= self.threshold else 0.0
            if self.mode == "prob":
                return float(score)
            return self.gamma * (0.0 if terminated else float(score)) - float(previous)
        score = np.asarray(score, np.float64)
        if self.mode == "binary":
            return (score >= self.threshold).astype(np.float64)
        if self.mode == "prob":
            return score
        return self.gamma * np.where(terminated, 0.0, score) - np.asarray(previous, np.float64)


@dataclass
class StepRecord:
    """What one (vector) step needs for its rewards, recorded before any score is known.

    Only the frames that must be scored are kept: ``needed`` marks them, ``frames``,
    ``instructions`` and ``infos`` hold them in env order."""

    active: np.ndarray  # (N,) envs with a real transition this step
    begin: np.ndarray  # (N,) envs whose frame starts a new episode (reset / autoreset step)
    due: np.ndarray  # (N,) active envs whose frame is scored this step
    terminated: np.ndarray  # (N,)
    needed: np.ndarray  # (N,) due, or beginning an episode in potential mode
    frames: np.ndarray  # (needed.sum(), H, W, 3)
    instructions: list[str]
    infos: list[dict] | None


class ShapingState:
    """Per-env shaping state for ``num_envs`` envs.

    Each step is first *recorded* (step counters, which frames to score — nothing that depends
    on a score), then *resolved* (one batched PRM call for any number of records, then the
    rewards in order). The per-step wrappers resolve every record at once; the deferred mode
    resolves a whole rollout at the end; both run this same code.
    """

    def __init__(self, shaping: Shaping, num_envs: int):
        self.shaping = shaping
        self.num_envs = num_envs
        self.previous = np.zeros(num_envs)  # score of the frame before the current action
        self.held = np.zeros(num_envs)  # last computed score (reused between scoring steps)
        self.count = np.zeros(num_envs, np.int64)  # steps since the episode began
        self.recent = np.zeros((num_envs, shaping.window))  # the episode's last scores, newest last
        self.filled = np.zeros(num_envs, np.int64)  # how many of them are set

    def _windowed(self, fresh: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Push ``fresh`` scores of the ``mask`` envs into their windows; their window means."""
        if self.shaping.window == 1:
            return fresh
        self.recent[mask] = np.roll(self.recent[mask], -1, axis=1)
        self.recent[mask, -1] = fresh[mask]
        self.filled[mask] = np.minimum(self.filled[mask] + 1, self.shaping.window)
        columns = np.arange(self.shaping.window)[None, :] >= self.shaping.window - self.filled[:, None]
        means = (self.recent * columns).sum(axis=1) / np.maximum(self.filled, 1)
        return np.where(mask, means, fresh)

    def record(self, frames, instructions, infos, active, begin, terminated, truncated) -> StepRecord:
        """Book-keep one step of all envs. ``frames``/``instructions``/``infos`` are indexable
        per env (``frames`` and ``infos`` may also be callables ``i -> value``, so that only
        the needed ones are built)."""
        active, begin = np.asarray(active, bool), np.asarray(begin, bool)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        self.count[begin] = 0
        due = active & (((self.count + 1) % self.shaping.score_every == 0) | terminated | truncated)
        self.count[active] += 1
        needed = due | (begin if self.shaping.mode == "potential" else np.zeros_like(begin))
        index = np.flatnonzero(needed)
        picked_infos = None
        if infos is not None:
            picked_infos = [infos(i) if callable(infos) else infos[i] for i in index]
        return StepRecord(
            active=active,
            begin=begin,
            due=due,
            terminated=terminated,
            needed=needed,
            frames=np.stack([np.array(frames(i) if callable(frames) else frames[i]) for i in index])
            if len(index)
            else np.zeros((0, 1, 1, 3), np.uint8),
            instructions=[str(instructions[i]) for i in index],
            infos=picked_infos,
        )

    def resolve(self, records: list[StepRecord], prm) -> list[tuple[np.ndarray, np.ndarray]]:
        """Score every needed frame of ``records`` in one PRM call, then return each record's
        ``(prm_score float32 (N,), prm_reward float64 (N,))`` in order (0 reward where inactive)."""
        frames = [r.frames for r in records if len(r.frames)]
        scores = np.zeros(0, np.float32)
        if frames:
            infos = None
            if all(r.infos is not None for r in records):
                infos = [info for r in records for info in r.infos]
            instructions = [text for r in records for text in r.instructions]
            scores = prm.score(np.concatenate(frames), instructions, infos)
        results, offset = [], 0
        for r in records:
            fresh = np.zeros(self.num_envs)
            fresh[r.needed] = scores[offset : offset + int(r.needed.sum())]
            offset += int(r.needed.sum())
            self.filled[r.begin] = 0
            fresh = self._windowed(fresh, r.begin & r.needed)
            self.previous[r.begin] = np.where(r.needed, fresh, 0.0)[r.begin]
            self.held[r.begin] = self.previous[r.begin]
            fresh = self._windowed(fresh, r.due)
            score = np.where(r.due, fresh, self.held)
            term = self.shaping.term(score, self.previous, r.terminated)
            reward = np.where(r.active, self.shaping.weight * term, 0.0)
            self.previous[r.active] = score[r.active]
            self.held[r.active] = score[r.active]
            results.append((score.astype(np.float32), reward))
        return results
