"""VLAPolicy on the tiny Qwen2-VL checkpoint: sampling, teacher forcing, value head."""

import numpy as np
import pytest
import torch

from tests.policies import tiny_vla_policy
from vla_rl.policy.action_tokenizer import ActionTokenizer
from vla_rl.policy.vla import VLAPolicy, _ExpectedBin

RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
TEXTS = [
    "touch the red block",
    "stack the blue block on the green block",
    "push the cyan block onto the red target",
    "touch the red block",
    "put the green block in the blue tray",
]


@pytest.fixture(scope="module")
def policy(tiny_qwen):
    return tiny_vla_policy(tiny_qwen, max_batch=2)


def test_sampled_log_probs_match_teacher_forcing(policy):
    torch.manual_seed(0)
    out = policy.act(FRAMES, TEXTS, temperature=0.7)
    assert out["token_ids"].shape == (5, 7) and out["actions"].shape == (5, 7)
    first = policy.action_tokenizer.first_id
    assert int(out["token_ids"].min()) >= first and int(out["token_ids"].max()) < first + 256
    evaluated = policy.evaluate(FRAMES, TEXTS, out["token_ids"], temperature=0.7)
    torch.testing.assert_close(evaluated["logprobs"], out["logprobs"], atol=1e-5, rtol=0)
    torch.testing.assert_close(evaluated["values"].detach(), out["values"], atol=1e-5, rtol=0)
    assert torch.all(out["logprobs"] < 0)
    np.testing.assert_allclose(out["actions"], policy.action_tokenizer.decode(out["token_ids"].numpy()))


def test_greedy_is_deterministic_and_chunking_does_not_matter(policy):
    chunked = policy.act(FRAMES, TEXTS, greedy=True)
    policy.max_batch = 16
    whole = policy.act(FRAMES, TEXTS, greedy=True)
    policy.max_batch = 2
    torch.testing.assert_close(chunked["token_ids"], whole["token_ids"])


def test_greedy_decodings_pick_the_expected_and_the_most_likely_bin(policy):
    bins = torch.arange(256, dtype=torch.float32)
    first = policy.action_tokenizer.first_id
    for decoding in ("mean", "argmax"):
        out = policy.act(FRAMES, TEXTS, greedy=True, greedy_decoding=decoding)
        # Teacher forcing on the chosen tokens gives each token's distribution given the ones before it.
        logits, _ = policy.forward_actions(FRAMES, TEXTS, out["token_ids"])
        chosen = (out["token_ids"] - first).float()
        if decoding == "mean":
            expected = (torch.softmax(logits.detach(), -1) * bins).sum(-1)
            assert torch.all((chosen - expected).abs() <= 0.5 + 1e-3), (chosen, expected)
        else:
            torch.testing.assert_close(chosen, logits.argmax(-1).float())
    assert not torch.equal(
        policy.act(FRAMES, TEXTS, greedy=True)["token_ids"],
        policy.act(FRAMES, TEXTS, greedy=True, greedy_decoding="argmax")["token_ids"],
    )


def test_expected_bin_of_a_two_peaked_distribution_lies_between_the_peaks():
    first = 10
    scores = torch.full((2, first + 256), -30.0)
    scores[0, first + 0] = scores[0, first + 255] = 0.0  # half at -1, half at +1: the middle
    scores[1, first + 200] = 5.0  # one clear peak: that bin
    kept = _ExpectedBin(first)(None, scores)
    assert kept.argmax(-1).tolist() == [first + 128, first + 200]  # 127.5 rounds to even
    assert torch.isinf(kept).sum(-1).tolist() == [first + 255, first + 255]


def test_evaluate_has_gradients_for_policy_and_value(policy):
    out = policy.act(FRAMES[:2], TEXTS[:2])
    evaluated = policy.evaluate(FRAMES[:2], TEXTS[:2], out["token_ids"])
    loss = -evaluated["logprobs"].mean() + evaluated["values"].pow(2).mean() - 0.01 * evaluated["entropy"].mean()
    loss.backward()
    assert policy.value_head.weight.grad is not None
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    policy.zero_grad()
    entropy = evaluated["entropy"].detach()
    assert torch.all(entropy > 0) and torch.all(entropy <= 7 * np.log(256) + 1e-4)


def test_bad_arguments(policy, tiny_qwen):
    with pytest.raises(ValueError, match="temperature"):
        policy.act(FRAMES[:1], TEXTS[:1], temperature=0.0)
    with pytest.raises(ValueError, match="greedy_decoding"):
        policy.act(FRAMES[:1], TEXTS[:1], greedy=True, greedy_decoding="median")
    with pytest.raises(ValueError, match="vocab_size"):
        VLAPolicy(policy.model, policy.processor, ActionTokenizer(5000))
    with pytest.raises(ValueError, match="local_rollout_forward_batch_size"):
        VLAPolicy(policy.model, policy.processor, policy.action_tokenizer, max_batch=0)
