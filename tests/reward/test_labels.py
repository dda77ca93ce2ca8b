"""PRM label schemes on constructed trajectories: values exactly as the formulas."""

import numpy as np
import pytest

from reward import labels as L


def test_completion_is_one_from_first_success_on():
    success = [False, False, True, False, True]
    assert L.completion_labels(success).tolist() == [0, 0, 1, 1, 1]
    assert L.completion_labels([]).tolist() == []


def test_step_correctness_compares_each_chunk_with_the_frame_before_it():
    # 7 frames, chunks of 3: step 0 = frames 0-2, step 1 = 3-5 (vs frame 2), step 2 = 6 (vs frame 5)
    progress = [0.0, 0.1, 0.2, 0.3, 0.1, 0.15, 0.4]
    assert L.step_index(7, 3).tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert L.step_correct(progress, 3).tolist() == [True, False, True]


def test_hard_step_rewards():
    progress = [0.0, 0.1, 0.2, 0.3, 0.1, 0.15, 0.4]
    expected_steps = [1.0, -1.0, 1.0]
    assert L.hard_step_rewards(progress, True, 3).tolist() == [expected_steps[s] for s in [0, 0, 0, 1, 1, 1, 2]]
    # a failed episode: every step is -1, correct or not
    assert L.hard_step_rewards(progress, False, 3).tolist() == [-1.0] * 7


def test_soft_step_rewards_follow_the_formula():
    progress = [0.0, 0.1, 0.2, 0.3, 0.1, 0.15, 0.4]
    total = 3
    per_step = [0.5 + 0.5 * 1 / total, -(0.5 + 0.5 * 2 / total), 0.5 + 0.5 * 3 / total]
    got = L.soft_step_rewards(progress, 3)
    np.testing.assert_allclose(got, [per_step[s] for s in [0, 0, 0, 1, 1, 1, 2]], rtol=1e-6)
    assert got[-1] == pytest.approx(1.0)


def test_milestones_on_a_scripted_gripper_sequence():
    # TCP moves 1 cm/frame for 4 frames, stops (milestone at the first rest frame), the gripper
    # closes (0 -> 0.04 m: milestone), then it moves again and stops again.
    positions = [0.00, 0.01, 0.02, 0.03, 0.04, 0.04, 0.04, 0.05, 0.06, 0.06]
    fingers = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.04, 0.04, 0.04, 0.04]
    states = np.zeros((len(positions), 8), np.float32)
    states[:, 0] = positions
    states[:, 6] = states[:, 7] = fingers
    assert np.flatnonzero(L.milestone_labels(states)).tolist() == [5, 6, 9]


def test_tokens_and_targets():
    assert L.tokens([1, 0, -1, 0.5]) == ["+", "-", "-", "+"]
    row = {"completion": 0, "he": -1.0, "se": 0.5, "progress": 0.5}
    assert L.target_probability("completion", row) == 0.0
    assert L.target_probability("he", row) == 0.0
    assert L.target_probability("se", row) == pytest.approx(0.75)
    assert L.target_probability("progress", row, progress_weight=0.4) == pytest.approx(0.2)
    assert L.target_probability("progress", {**row, "completion": 1}) == 1.0
    with pytest.raises(ValueError, match="unknown target"):
        L.target_probability("bogus", row)
