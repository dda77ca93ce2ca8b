"""The OpenVLA-convention action tokenizer."""

import numpy as np
import pytest

from vla_rl.policy.action_tokenizer import NUM_BINS, ActionStats, ActionTokenizer


def test_bins_are_the_last_256_ids_and_round_trip_within_half_a_bin():
    tokenizer = ActionTokenizer(vocab_size=1000)
    values = np.random.default_rng(0).uniform(-1, 1, (500, 7))
    ids = tokenizer.encode(values)
    assert ids.min() >= 1000 - NUM_BINS and ids.max() <= 999
    assert tokenizer.encode(np.full(7, -1.0)).tolist() == [744] * 7
    assert tokenizer.encode(np.full(7, 1.0)).tolist() == [999] * 7
    assert np.max(np.abs(tokenizer.decode(ids) - values)) <= 1.0 / NUM_BINS + 1e-12
    np.testing.assert_array_equal(tokenizer.encode(tokenizer.decode(ids)), ids)


def test_stats_normalise_q01_q99_and_pass_unused_dimensions_through(tmp_path):
    rng = np.random.default_rng(1)
    actions = np.zeros((2000, 7))
    actions[:, 0] = rng.uniform(-0.5, 0.5, 2000)
    actions[:, 6] = rng.choice([-1.0, 1.0], 2000)
    stats = ActionStats.from_actions(actions)
    assert not stats.scaled[1] and stats.scaled[0] and stats.scaled[6]
    normalized = stats.normalize(actions)
    assert normalized[:, 0].min() == -1.0 and normalized[:, 0].max() == 1.0
    np.testing.assert_array_equal(normalized[:, 1], 0.0)
    inner = (actions[:, 0] > stats.q01[0]) & (actions[:, 0] < stats.q99[0])
    np.testing.assert_allclose(stats.unnormalize(normalized)[inner], actions[inner], atol=1e-12)
    stats.save(str(tmp_path))
    loaded = ActionStats.load(str(tmp_path))
    np.testing.assert_array_equal(loaded.q01, stats.q01)
    tokenizer = ActionTokenizer(1000, 7, loaded)
    decoded = tokenizer.decode(tokenizer.encode(actions[:10]))
    assert np.max(np.abs(decoded[:, 0] - actions[:10, 0])) <= (stats.q99[0] - stats.q01[0]) / NUM_BINS + 1e-9


def test_bad_inputs():
    with pytest.raises(ValueError, match="vocab_size"):
        ActionTokenizer(100)
    tokenizer = ActionTokenizer(1000)
    with pytest.raises(ValueError, match="dimension 7"):
        tokenizer.encode(np.zeros(6))
    with pytest.raises(ValueError, match="action tokens"):
        tokenizer.decode([5] * 7)
    with pytest.raises(ValueError, match="q99"):
        ActionStats(np.ones(7), np.zeros(7))
    with pytest.raises(FileNotFoundError, match="action statistics"):
        ActionStats.load("/nonexistent")
