"""PRM metric functions against hand-computed cases."""

import math

import numpy as np
import pytest

from reward.prm_metrics import (
    best_f1_threshold,
    best_window_threshold,
    causal_mean,
    episode_metrics,
    expected_calibration_error,
    flicker_count,
    frame_metrics,
    value_order_correlation,
    windowed,
)


def test_frame_metrics_hand_computed():
    scores = [0.9, 0.8, 0.3, 0.6, 0.1, 0.2]
    labels = [1, 1, 1, 0, 0, 0]
    m = frame_metrics(scores, labels)
    # TP=2, FN=1, FP=1, TN=2
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy_negative"] == pytest.approx(2 / 3)
    assert m["balanced_hmean"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx(np.mean([0.01, 0.04, 0.49, 0.36, 0.01, 0.04]))


def test_balanced_hmean_punishes_always_negative():
    m = frame_metrics([0.0] * 10, [1] + [0] * 9)
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["balanced_hmean"] == 0.0 and m["f1"] == 0.0


def test_ece_hand_computed():
    # bin [0.2,0.3): scores 0.25,0.25 labels 0,1 -> |0.5-0.25|; bin [0.9,1]: 0.95, label 1 -> 0.05
    assert expected_calibration_error([0.25, 0.25, 0.95], [0, 1, 1]) == pytest.approx((2 * 0.25 + 0.05) / 3)


def test_value_order_and_flicker():
    assert value_order_correlation([0.1, 0.2, 0.3, 0.9]) == pytest.approx(1.0)
    assert value_order_correlation([0.9, 0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    assert math.isnan(value_order_correlation([0.5, 0.5]))
    assert flicker_count([0, 1, 0, 1, 1, 0, 0, 1, 0]) == 2
    assert flicker_count([0, 0, 1, 1, 0]) == 0


def test_episode_metrics():
    episodes = [
        {"scores": [0.1, 0.2, 0.7, 0.9], "completion": [0, 0, 0, 1], "success": True, "max_progress": 1.0},
        {"scores": [0.1, 0.6, 0.2, 0.3], "completion": [0, 0, 0, 0], "success": False, "max_progress": 0.8},
        {"scores": [0.1, 0.1, 0.2, 0.1], "completion": [0, 0, 0, 0], "success": False, "max_progress": 0.2},
    ]
    m = episode_metrics(episodes)
    assert m["value_order_correlation"] == pytest.approx(1.0)
    assert m["earliest_completion_error_frames"] == pytest.approx(1.0)  # predicted at 2, true at 3
    assert m["near_miss_failures"] == 1
    assert m["near_miss_false_positive_rate"] == pytest.approx(1.0)
    assert m["near_miss_false_positive_frame_rate"] == pytest.approx(0.25)
    assert m["flicker_rate"] == 0.0


def test_best_f1_threshold_hand_computed():
    scores, labels = [0.1, 0.4, 0.6, 0.9], [0, 1, 0, 1]
    # F1 is 2/3 up to 0.10, 0.8 on (0.10, 0.40], 0.5 on (0.40, 0.60], 2/3 on (0.60, 0.90]:
    # the best band's grid point closest to 0.5 is 0.40
    threshold, f1 = best_f1_threshold(scores, labels)
    assert threshold == pytest.approx(0.40) and f1 == pytest.approx(0.8)
    # a perfect separation anywhere in (0.4, 0.6]: ties go to 0.5
    assert best_f1_threshold([0.1, 0.4, 0.6, 0.9], [0, 0, 1, 1]) == (pytest.approx(0.5), pytest.approx(1.0))
    with pytest.raises(ValueError, match="labelled completed"):
        best_f1_threshold([0.2, 0.7], [0, 0])


def test_causal_mean_hand_computed():
    np.testing.assert_allclose(causal_mean([0.0, 0.6, 0.3, 0.9], 2), [0.0, 0.3, 0.45, 0.6])
    np.testing.assert_allclose(causal_mean([0.0, 0.6, 0.3, 0.9], 3), [0.0, 0.3, 0.3, 0.6])
    np.testing.assert_allclose(causal_mean([0.2, 0.4], 1), [0.2, 0.4])
    assert causal_mean([], 3).shape == (0,)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="score window"):
            causal_mean([0.5], bad)


def test_windowed_keeps_episodes_apart_and_the_input_order():
    # two interleaved episodes, frames out of order: each is averaged along its own frames only
    scores = [0.9, 0.0, 0.5, 1.0, 0.1]
    episodes = ["b", "a", "a", "b", "a"]
    frames = [1, 0, 2, 0, 1]
    # a: frames 0, 1, 2 = 0.0, 0.1, 0.5 -> 0.0, 0.05, 0.3; b: frames 0, 1 = 1.0, 0.9 -> 1.0, 0.95
    np.testing.assert_allclose(windowed(scores, episodes, frames, 2), [0.95, 0.0, 0.3, 1.0, 0.05])
    np.testing.assert_allclose(windowed(scores, episodes, frames, 1), scores)


def test_best_window_threshold_prefers_a_window_only_when_it_helps():
    # an isolated spike at frame 2 of a failed episode: a single frame at 0.8 cannot be told from the
    # completed frames (0.8, 0.9, 0.9), the two-frame mean can (0.45 against >= 0.5)
    scores = [0.1, 0.1, 0.8, 0.1, 0.1, 0.2, 0.2, 0.8, 0.9, 0.9]
    labels = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    episodes = [0] * 5 + [1] * 5
    frames = list(range(5)) * 2
    window, threshold, f1 = best_window_threshold(scores, labels, episodes, frames, (1, 2, 3))
    assert window == 2 and f1 == pytest.approx(1.0) and 0.45 < threshold <= 0.5
    assert best_f1_threshold(scores, labels)[1] < 1.0
    # separable frame by frame: the shortest window wins the tie
    clean = [0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.8, 0.9, 0.9]
    assert best_window_threshold(clean, labels, episodes, frames, (1, 2, 3))[0] == 1
