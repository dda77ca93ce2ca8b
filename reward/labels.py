"""Per-frame labels for process-reward-model datasets, computed from simulator signals.

Every function takes one episode of ``T`` frames (the reset frame and one frame after each
action) and returns one label per frame:

- **completion** — 1 from the first frame at which ``info["success"]`` holds, else 0. This is
  what the PRM is asked ("is the task completed?").
- **milestones** — pseudo-labels for suites without privileged success (the VLAC/PRM recipe):
  a frame is a milestone when the gripper opens or closes, or when the end effector comes to
  rest after moving.
- **step rewards** over steps = chunks of ``step_frames`` consecutive frames; a step is
  *correct* when privileged progress does not go backwards over it.
  HE (hard estimation): +1 if the episode succeeds and the step is correct, else -1.
  SE (soft estimation): correct ``0.5 + 0.5·pos/total``, wrong ``-0.5 - 0.5·pos/total``, where
  ``pos`` is the step's 1-based index and ``total`` the number of steps.

Labels are also written as answer tokens, ``"+"`` for a positive value and ``"-"`` otherwise.
"""

from __future__ import annotations

import numpy as np

POSITIVE, NEGATIVE = "+", "-"
SCHEMES = ("completion", "he", "se")  # the label columns of a dataset
TARGETS = ("completion", "progress", "he", "se")  # what a PRM can be trained towards


def completion_labels(success) -> np.ndarray:
    """``(T,) int8``: 1 from the first successful frame on (completion is never undone)."""
    success = np.asarray(success, bool)
    return np.maximum.accumulate(success).astype(np.int8) if len(success) else np.zeros(0, np.int8)


def step_index(num_frames: int, step_frames: int) -> np.ndarray:
    """``(T,) int``: the 0-based step each frame belongs to (chunks of ``step_frames``)."""
    if step_frames < 1:
        raise ValueError(f"step_frames must be >= 1, got {step_frames}.")
    return np.arange(num_frames) // step_frames


def step_correct(progress, step_frames: int, tolerance: float = 1e-3) -> np.ndarray:
    """``(S,) bool`` per step: progress at the step's last frame is not below progress at the
    frame before the step (the previous step's last frame; the first frame for step 0) by more
    than ``tolerance``."""
    progress = np.asarray(progress, np.float64)
    steps = step_index(len(progress), step_frames)
    total = int(steps[-1]) + 1 if len(progress) else 0
    correct = np.zeros(total, bool)
    for j in range(total):
        start = max(j * step_frames - 1, 0)
        end = min((j + 1) * step_frames, len(progress)) - 1
        correct[j] = progress[end] >= progress[start] - tolerance
    return correct


def hard_step_rewards(progress, episode_success: bool, step_frames: int, tolerance: float = 1e-3) -> np.ndarray:
    """``(T,) float32`` HE reward of each frame's step: +1 if the episode succeeded and the step
    is correct, else -1."""
    correct = step_correct(progress, step_frames, tolerance)
    per_step = np.where(correct & bool(episode_success), 1.0, -1.0)
    return per_step[step_index(len(progress), step_frames)].astype(np.float32)


def soft_step_rewards(progress, step_frames: int, tolerance: float = 1e-3) -> np.ndarray:
    """``(T,) float32`` SE reward of each frame's step: ``±(0.5 + 0.5·pos/total)``, positive for
    a correct step (pos = 1-based step index)."""
    correct = step_correct(progress, step_frames, tolerance)
    total = len(correct)
    magnitude = 0.5 + 0.5 * np.arange(1, total + 1) / max(total, 1)
    per_step = np.where(correct, magnitude, -magnitude)
    return per_step[step_index(len(progress), step_frames)].astype(np.float32)


def milestone_labels(
    states,
    gripper_channels: slice = slice(6, 8),
    position_channels: slice = slice(0, 3),
    gripper_travel: float = 0.04,
    gripper_threshold: float = 0.5,
    rest_speed: float = 4e-3,
    moving_speed: float = 8e-3,
) -> np.ndarray:
    """``(T,) int8`` milestone pseudo-labels from proprioception alone.

    Args:
        states: ``(T, D)`` proprioceptive states (our tasks: TCP xyz, rotation, two finger
            closures in [0, 1]).
        gripper_channels: the finger columns (metres of travel); their mean, as a fraction of
            ``gripper_travel``, crossing ``gripper_threshold`` between two frames is an
            open/close event (marked at the later frame).
        position_channels: the end-effector position columns (metres).
        rest_speed: per-frame displacement (metres) below which the end effector is at rest.
        moving_speed: displacement above which it counts as moving; a milestone is the first
            rest frame after a moving frame.
    """
    states = np.asarray(states, np.float64)
    labels = np.zeros(len(states), np.int8)
    if len(states) < 2:
        return labels
    closed = states[:, gripper_channels].mean(axis=1) / gripper_travel > gripper_threshold
    labels[1:][closed[1:] != closed[:-1]] = 1
    speed = np.linalg.norm(np.diff(states[:, position_channels], axis=0), axis=1)  # speed[t-1]: frame t-1 -> t
    moved = False
    for t, v in enumerate(speed, start=1):
        if v > moving_speed:
            moved = True
        elif v < rest_speed and moved:
            labels[t] = 1
            moved = False
    return labels


def tokens(values) -> list[str]:
    """``"+"`` for each value > 0, else ``"-"``."""
    return [POSITIVE if v > 0 else NEGATIVE for v in np.asarray(values, np.float64)]


def target_probability(scheme: str, row: dict, progress_weight: float = 0.4) -> float:
    """The soft target P(positive) that one dataset row trains towards.

    ``completion`` and ``he`` are hard (1 or 0); ``se`` maps its value in [-1, 1] linearly to
    [0, 1]; ``progress`` is 1 on completed frames and ``progress_weight · progress`` before
    (below 0.5 for a weight <= 0.5, so thresholding at 0.5 still answers "completed?", while the
    probability rises as the task advances — a dense, order-preserving process reward)."""
    if scheme == "completion":
        return float(row["completion"] > 0)
    if scheme == "he":
        return float(row["he"] > 0)
    if scheme == "se":
        return float(np.clip((row["se"] + 1.0) / 2.0, 0.0, 1.0))
    if scheme == "progress":
        return 1.0 if row["completion"] > 0 else float(progress_weight * np.clip(row["progress"], 0.0, 1.0))
    raise ValueError(f"unknown target scheme {scheme!r}; choose one of {TARGETS}.")


def episode_labels(success, progress, states, step_frames: int = 5, tolerance: float = 1e-3) -> dict:
    """All per-frame label arrays of one episode (see the module docstring)."""
    completion = completion_labels(success)
    episode_success = bool(completion[-1]) if len(completion) else False
    return {
        "completion": completion,
        "milestone": milestone_labels(states),
        "step": step_index(len(completion), step_frames),
        "he": hard_step_rewards(progress, episode_success, step_frames, tolerance),
        "se": soft_step_rewards(progress, step_frames, tolerance),
    }
