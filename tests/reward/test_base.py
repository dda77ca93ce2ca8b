"""The PRM contract: input validation and the simple PRMs."""

import logging

import numpy as np
import pytest

from reward.base import DummyRM, OracleRM, RandomRM

FRAMES = np.zeros((3, 8, 8, 3), np.uint8)
TEXTS = ["a", "b", "c"]


@pytest.mark.parametrize(
    "frames, texts, message",
    [
        (FRAMES.astype(np.float32), TEXTS, "uint8"),
        (np.zeros((3, 8, 8), np.uint8), TEXTS, r"\(B, H, W, 3\)"),
        (np.zeros((3, 8, 8, 4), np.uint8), TEXTS, r"\(B, H, W, 3\)"),
        (FRAMES, ["a", "b"], "must match"),
        (FRAMES, "abc", "list of strings"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)], ["a", "b"], "same shape"),
        ("not frames", ["a"], "numpy array"),
    ],
)
def test_bad_inputs_raise_value_errors(frames, texts, message):
    with pytest.raises(ValueError, match=message):
        DummyRM().score(frames, texts)


def test_infos_length_must_match():
    with pytest.raises(ValueError, match="infos"):
        OracleRM().score(FRAMES, TEXTS, infos=[{}])


def test_dummy_scores_zero_with_the_common_shape_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="vla_rl.prm"):
        prm = DummyRM()
    assert "DummyRM" in caplog.text
    scores = prm.score(FRAMES, TEXTS)
    assert scores.dtype == np.float32 and scores.shape == (3,) and not scores.any()
    assert prm.score(list(FRAMES), TEXTS).shape == (3,)
    assert prm.score(np.zeros((0, 8, 8, 3), np.uint8), []).shape == (0,)


def test_oracle_reads_success_or_progress():
    infos = [
        {"success": False, "progress": 0.25},
        {"success": True, "progress": 1.0},
        {"success": False, "progress": 0.9},
    ]
    np.testing.assert_array_equal(OracleRM("success").score(FRAMES, TEXTS, infos), [0, 1, 0])
    np.testing.assert_allclose(OracleRM("progress").score(FRAMES, TEXTS, infos), [0.25, 1.0, 0.9])
    with pytest.raises(ValueError, match="infos"):
        OracleRM().score(FRAMES, TEXTS)
    with pytest.raises(ValueError, match="'success'"):
        OracleRM().score(FRAMES, TEXTS, [{}, {}, {}])
    with pytest.raises(ValueError, match="signal"):
        OracleRM("reward")


def test_random_rm_is_seeded_and_has_the_chosen_positive_rate():
    frames = np.zeros((4000, 2, 2, 3), np.uint8)
    texts = ["x"] * 4000
    a = RandomRM(0.3, seed=5).score(frames, texts)
    b = RandomRM(0.3, seed=5).score(frames, texts)
    np.testing.assert_array_equal(a, b)
    assert abs((a >= 0.5).mean() - 0.3) < 0.03
    assert a.min() >= 0 and a.max() <= 1
    with pytest.raises(ValueError, match="positive_rate"):
        RandomRM(1.5)
