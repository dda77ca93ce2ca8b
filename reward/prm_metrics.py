"""Metrics for a process reward model's P(completed) against simulator labels.

Frame level: precision / recall / F1 of "completed" at a threshold, the harmonic mean of the
accuracy on positive and on negative frames (robust to the heavy class imbalance: most frames
of an episode are not completed), and calibration (expected calibration error, Brier score).

Episode level: value-order correlation (Spearman between P(completed) and time on successful
episodes: a good PRM rises as the task advances), earliest-completion error (frames between
the first predicted and the first true completion), flicker (1→0→1 flips of the thresholded
prediction per episode) and false positives on near-miss failures.

Score window: the completion label is a property of the episode so far (1 from the first
completed frame on), and a single frame's P(completed) flickers near the boundary; a PRM may
record a causal window (``score_window`` in its ``prm_config.json``, chosen with the threshold
on validation episodes) over which its per-frame scores are averaged wherever it is used.
"""

from __future__ import annotations

import numpy as np


def frame_metrics(scores, labels, threshold: float = 0.5, bins: int = 10) -> dict:
    """Frame-level metrics of ``scores`` (P(completed), ``(N,)``) against 0/1 ``labels``."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-D shapes.")
    predicted = scores >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    acc_pos = recall
    acc_neg = tn / (tn + fp) if tn + fp else 0.0
    hmean = 2 * acc_pos * acc_neg / (acc_pos + acc_neg) if acc_pos + acc_neg else 0.0
    return {
        "frames": int(len(scores)),
        "positives": int(labels.sum()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / len(scores) if len(scores) else 0.0,
        "accuracy_positive": acc_pos,
        "accuracy_negative": acc_neg,
        "balanced_hmean": hmean,
        "ece": expected_calibration_error(scores, labels, bins),
        "brier": float(np.mean((scores - labels) ** 2)) if len(scores) else 0.0,
        "threshold": threshold,
    }


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
SCORE_WINDOWS = (1, 2, 3, 4)  # the causal score windows that training chooses among


def causal_mean(scores, window: int) -> np.ndarray:
    """Each score of one episode's ``(T,)`` sequence replaced by the mean of it and the
    ``window - 1`` scores before it (fewer at the episode's start). Causal: a step's value uses
    no later frame, so a reward computed online during a rollout gets the same values."""
    scores = np.asarray(scores, np.float64)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"score window must be an integer >= 1, got {window!r}.")
    if window == 1 or not len(scores):
        return scores.copy()
    total = np.cumsum(np.concatenate([[0.0], scores]))
    ends = np.arange(1, len(scores) + 1)
    starts = np.maximum(ends - window, 0)
    return (total[ends] - total[starts]) / (ends - starts)


def windowed(scores, episodes, frames, window: int) -> np.ndarray:
    """:func:`causal_mean` over each episode of flat arrays: ``episodes`` (an id per score) and
    ``frames`` (its frame index) say which scores follow which; the result is in input order."""
    scores = np.asarray(scores, np.float64)
    if window == 1:
        return scores.copy()
    episodes, frames = np.asarray(episodes), np.asarray(frames)
    out = np.empty_like(scores)
    order = np.lexsort((frames, episodes))
    sorted_episodes = episodes[order]
    cuts = np.flatnonzero(sorted_episodes[1:] != sorted_episodes[:-1]) + 1
    for chunk in np.split(order, cuts):
        out[chunk] = causal_mean(scores[chunk], window)
    return out


def best_window_threshold(scores, labels, episodes, frames, windows=SCORE_WINDOWS) -> tuple[int, float, float]:
    """``(window, threshold, F1)``: the causal score window and threshold with the best frame F1
    (of equally good windows, the shortest)."""
    best = None
    for window in windows:
        threshold, f1 = best_f1_threshold(windowed(scores, episodes, frames, window), labels)
        if best is None or f1 > best[2] + 1e-12:
            best = (int(window), threshold, f1)
    return best


def best_f1_threshold(scores, labels, grid=THRESHOLD_GRID) -> tuple[float, float]:
    """The threshold on ``grid`` with the highest frame F1 of ``scores`` against ``labels``, and
    that F1. Of equally good thresholds the one closest to 0.5 wins (the untuned default)."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    if not labels.any():
        raise ValueError("tuning a threshold needs frames labelled completed; these have none.")
    f1 = np.array([frame_metrics(scores, labels, float(t))["f1"] for t in grid])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    chosen = best[np.argmin(np.abs(np.asarray(grid)[best] - 0.5))]
    return float(grid[chosen]), float(f1[chosen])


def expected_calibration_error(scores, labels, bins: int = 10) -> float:
    """Σ_b (n_b / N) · |mean label − mean score| over ``bins`` equal-width bins of the score."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.float64)
    if not len(scores):
        return 0.0
    which = np.minimum((scores * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(labels[mask].mean() - scores[mask].mean())
    return float(error)


def value_order_correlation(scores) -> float:
    """Spearman rank correlation between the scores of one episode and time (ties averaged);
    NaN for episodes shorter than 2 frames or with constant scores."""
    from scipy.stats import spearmanr

    scores = np.asarray(scores, np.float64)
    if len(scores) < 2 or np.all(scores == scores[0]):
        return float("nan")
    return float(spearmanr(np.arange(len(scores)), scores).statistic)


def first_true(flags) -> int | None:
    hits = np.flatnonzero(np.asarray(flags, bool))
    return int(hits[0]) if len(hits) else None


def flicker_count(predicted) -> int:
    """Number of 1→0→1 flips: runs of 0 that lie strictly between two 1s."""
    predicted = np.asarray(predicted, bool)
    ones = np.flatnonzero(predicted)
    if len(ones) < 2:
        return 0
    inside = predicted[ones[0] : ones[-1] + 1]
    falls = np.sum(inside[:-1] & ~inside[1:])
    return int(falls)


def episode_metrics(episodes: list[dict], threshold: float = 0.5, near_miss_progress: float = 0.5) -> dict:
    """Episode-level metrics.

    Args:
        episodes: dicts with ``scores`` ``(T,)``, ``completion`` ``(T,)`` 0/1 labels,
            ``success`` (bool) and ``max_progress`` (privileged, in [0, 1]).
        threshold: P(completed) at or above which a frame is predicted completed.
        near_miss_progress: a failed episode is a near miss when its privileged progress
            reached at least this.
    """
    correlations, errors, missed, flickers = [], [], 0, []
    near_misses, near_miss_fp, near_miss_fp_frames, near_miss_frames = 0, 0, 0, 0
    for episode in episodes:
        scores = np.asarray(episode["scores"], np.float64)
        predicted = scores >= threshold
        flickers.append(flicker_count(predicted))
        if episode["success"]:
            correlations.append(value_order_correlation(scores))
            first_pred, first_label = first_true(predicted), first_true(episode["completion"])
            if first_pred is None:
                missed += 1
            elif first_label is not None:
                errors.append(abs(first_pred - first_label))
        elif episode["max_progress"] >= near_miss_progress:
            near_misses += 1
            near_miss_fp += bool(predicted.any())
            near_miss_fp_frames += int(predicted.sum())
            near_miss_frames += len(predicted)
    finite = [c for c in correlations if np.isfinite(c)]
    return {
        "episodes": len(episodes),
        "successful_episodes": len(correlations),
        "value_order_correlation": float(np.mean(finite)) if finite else float("nan"),
        "value_order_correlation_median": float(np.median(finite)) if finite else float("nan"),
        "earliest_completion_error_frames": float(np.mean(errors)) if errors else float("nan"),
        "completion_missed_episodes": missed,
        "flicker_rate": float(np.mean(flickers)) if flickers else 0.0,
        "near_miss_failures": near_misses,
        "near_miss_false_positive_rate": near_miss_fp / near_misses if near_misses else float("nan"),
        "near_miss_false_positive_frame_rate": near_miss_fp_frames / near_miss_frames
        if near_miss_frames
        else float("nan"),
    }
