"""GAE and the PPO losses against hand-computed cases."""

import math

import pytest
import torch

from vla_rl.ppo import compute_gae, episode_weights, group_advantages, normalize_advantages, ppo_loss

REWARDS = torch.tensor([[1.0], [0.0], [2.0]])
VALUES = torch.tensor([[0.5], [0.4], [0.3]])
NEXT = torch.tensor([[0.4], [0.3], [0.7]])
NO = torch.zeros(3, 1, dtype=torch.bool)


def _flags(*steps):
    flags = NO.clone()
    for t in steps:
        flags[t, 0] = True
    return flags


def _gae(terminated=NO, truncated=NO, valid=None):
    adv, ret = compute_gae(REWARDS, VALUES, NEXT, terminated, truncated, valid, gamma=0.9, lam=0.8)
    return adv[:, 0].tolist(), ret[:, 0].tolist()


def test_gae_without_episode_ends():
    # deltas: 1 + .9*.4 - .5 = .86; 0 + .9*.3 - .4 = -.13; 2 + .9*.7 - .3 = 2.33; gamma*lam = .72
    adv, ret = _gae()
    assert adv == pytest.approx([0.86 + 0.72 * (-0.13 + 0.72 * 2.33), -0.13 + 0.72 * 2.33, 2.33])
    assert ret == pytest.approx([a + v for a, v in zip(adv, [0.5, 0.4, 0.3], strict=True)])


def test_gae_terminated_has_no_future_value():
    adv, _ = _gae(terminated=_flags(1))
    assert adv == pytest.approx([0.86 + 0.72 * (-0.4), -0.4, 2.33])


def test_gae_truncated_bootstraps_but_cuts_the_trace():
    adv, _ = _gae(truncated=_flags(1))
    assert adv == pytest.approx([0.86 + 0.72 * (-0.13), -0.13, 2.33])


def test_gae_invalid_autoreset_steps_are_zero_and_not_linked():
    valid = ~_flags(1)
    adv, _ = _gae(truncated=_flags(0), valid=valid)
    assert adv == pytest.approx([0.86, 0.0, 2.33])


def _batch():
    old = torch.zeros(3)
    new = torch.log(torch.tensor([1.5, 0.5, 1.1])).requires_grad_()
    adv = torch.tensor([1.0, -1.0, 2.0])
    new_values = torch.tensor([1.0, 0.0, 2.0])
    old_values = torch.tensor([0.5, 0.5, 0.5])
    returns = torch.tensor([1.2, -1.0, 0.6])
    return new, old, adv, new_values, old_values, returns


def test_ppo_clipped_surrogate_value_loss_and_diagnostics():
    new, old, adv, new_values, old_values, returns = _batch()
    terms = ppo_loss(new, old, adv, new_values, old_values, returns, clip_coef=0.2, value_clip=0.2)
    assert terms.policy_loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3)
    assert terms.value_loss.item() == pytest.approx(0.5 * (0.25 + 1.69 + 1.96) / 3)
    assert terms.clipfrac.item() == pytest.approx(2 / 3)
    kl = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert terms.approx_kl.item() == pytest.approx(sum(kl) / 3)
    assert terms.ratio_mean.item() == pytest.approx((1.5 + 0.5 + 1.1) / 3)
    assert terms.loss.item() == pytest.approx(terms.policy_loss.item() + 0.5 * terms.value_loss.item())


def test_clipped_samples_get_no_policy_gradient():
    new, old, adv, new_values, old_values, returns = _batch()
    ppo_loss(new, old, adv, new_values, old_values, returns, value_clip=None).policy_loss.backward()
    # sample 0 (ratio 1.5 > 1.2, A > 0) and sample 1 (ratio 0.5 < 0.8, A < 0) are clipped
    assert new.grad.tolist() == pytest.approx([0.0, 0.0, -2.0 * 1.1 / 3])


def test_ratio_is_one_only_when_the_policy_did_not_move():
    logp = torch.tensor([-1.0, -2.0])
    terms = ppo_loss(logp, logp.clone(), torch.ones(2), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    assert terms.ratio_mean.item() == 1.0 and terms.clipfrac.item() == 0.0 and terms.approx_kl.item() == 0.0


def test_masked_samples_do_not_count():
    new, old, adv, new_values, old_values, returns = _batch()
    mask = torch.tensor([True, False, True])
    terms = ppo_loss(new, old, adv, new_values, old_values, returns, mask=mask)
    assert terms.policy_loss.item() == pytest.approx((-1.2 - 2.2) / 2)


def test_entropy_bonus_and_advantage_normalisation():
    new, old, adv, new_values, old_values, returns = _batch()
    entropy = torch.tensor([1.0, 2.0, 3.0])
    terms = ppo_loss(new, old, adv, new_values, old_values, returns, entropy=entropy, entropy_coef=0.1)
    assert terms.loss.item() == pytest.approx(terms.policy_loss.item() + 0.5 * terms.value_loss.item() - 0.2)
    normalized = normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 10.0]), torch.tensor([1, 1, 1, 0]).bool())
    assert normalized[:3].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert normalized[:3].pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_group_advantages_grpo_and_rloo_by_hand():
    # 4 episodes (columns), groups {0, 1} and {2, 3}; episode 1 ends after one step.
    rewards = torch.tensor([[0.0, 0.0, 0.5, 0.2], [1.0, 7.0, 0.0, 0.3], [2.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, True], [True, False, True, True], [True, False, False, False]])
    # Returns: 3, 0 (the 7 is not a valid step) | 0.5, 0.5 (a tie).
    grpo = group_advantages(rewards, valid, group_size=2, estimator="grpo")
    assert grpo[:, 0].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)  # (3 - 1.5) / 1.5
    assert grpo[:, 1].tolist() == pytest.approx([-1.0, 0.0, 0.0], abs=1e-5)  # invalid steps get nothing
    assert torch.equal(grpo[:, 2:], torch.zeros(3, 2))  # a tied group holds no signal
    rloo = group_advantages(rewards, valid, group_size=2, estimator="rloo")
    assert rloo[0].tolist() == pytest.approx([3.0, -3.0, 0.0, 0.0])  # R_i minus the other episode's R


def test_reward_to_go_credit_leaves_out_the_rewards_before_each_step():
    # The case above: episode 0 rewards 0, 1, 2 (return 3), episode 1 rewards 0 then ends (0).
    rewards = torch.tensor([[0.0, 0.0, 0.5, 0.2], [1.0, 7.0, 0.0, 0.3], [2.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, True], [True, False, True, True], [True, False, False, False]])
    grpo = group_advantages(rewards, valid, group_size=2, estimator="grpo", credit="to_go")
    # Rewards-to-go of episode 0: 3, 3, 2; against the group's mean 1.5 and std 1.5.
    assert grpo[:, 0].tolist() == pytest.approx([1.0, 1.0, 1 / 3], abs=1e-5)
    assert grpo[:, 1].tolist() == pytest.approx([-1.0, 0.0, 0.0], abs=1e-5)
    assert torch.equal(grpo[:, 2:], torch.zeros(3, 2))  # a tied group still holds no signal
    rloo = group_advantages(rewards, valid, group_size=2, estimator="rloo", credit="to_go")
    assert rloo[:, 0].tolist() == pytest.approx([3.0, 3.0, 2.0])  # G_t minus the other episode's return (0)
    assert rloo[:, 1].tolist() == pytest.approx([-3.0, 0.0, 0.0])
    # Potential shaping (the PRM's score p: 0 -> 0.5 -> 0.9, then success with terminal potential 0):
    # each step's reward-to-go is the success plus what the score does from that step on.
    shaped = torch.tensor([[0.5, 0.0], [0.4, 0.2], [1.0 - 0.9, 0.0]])  # episode 1: 0 -> 0 -> 0.2 -> 0.2
    adv = group_advantages(shaped, torch.ones(3, 2, dtype=torch.bool), group_size=2, estimator="rloo", credit="to_go")
    assert adv[:, 0].tolist() == pytest.approx([1.0 - 0.2, 0.5 - 0.2, 0.1 - 0.2])
    assert adv[:, 1].tolist() == pytest.approx([0.2 - 1.0, 0.2 - 1.0, 0.0 - 1.0])
    # The first step's advantage is the episode's (credit="episode" gives it to every step).
    episode = group_advantages(shaped, torch.ones(3, 2, dtype=torch.bool), group_size=2, estimator="rloo")
    assert torch.allclose(episode[0], adv[0]) and torch.allclose(episode, episode[:1].expand(3, 2))
    with pytest.raises(ValueError, match="credit"):
        group_advantages(shaped, torch.ones(3, 2, dtype=torch.bool), group_size=2, credit="step")


def test_rloo_subtracts_the_mean_of_the_other_episodes():
    rewards = torch.tensor([[3.0, 0.0, 0.0]])
    adv = group_advantages(rewards, torch.ones(1, 3, dtype=torch.bool), group_size=3, estimator="rloo")
    assert adv[0].tolist() == pytest.approx([3.0, -1.5, -1.5])  # 3 - 0; 0 - (3 + 0) / 2
    grpo = group_advantages(rewards, torch.ones(1, 3, dtype=torch.bool), group_size=3, estimator="grpo")
    assert grpo[0].tolist() == pytest.approx([2 / math.sqrt(2), -1 / math.sqrt(2), -1 / math.sqrt(2)], abs=1e-5)
    with pytest.raises(ValueError, match="divide"):
        group_advantages(rewards, torch.ones(1, 3, dtype=torch.bool), group_size=2)


def test_episode_weights_give_every_episode_the_same_total_weight():
    valid = torch.zeros(6, 4, dtype=torch.bool)
    valid[:2, 0], valid[:6, 1], valid[:4, 2] = True, True, True  # lengths 2, 6, 4 and an empty column
    weights = episode_weights(valid)
    assert weights[0].tolist() == pytest.approx([2.0, 2 / 3, 1.0, 0.0])  # mean length 4 over each length
    per_episode = (valid * weights).sum(0)
    assert per_episode[:3].tolist() == pytest.approx([4.0, 4.0, 4.0])
    assert ((valid * weights).sum() / valid.sum()).item() == pytest.approx(1.0)  # samples still average 1
    # On the clipped surrogate, scaled advantages are per-sample weights: a two-step failure and a
    # six-step success of one group now pull with equal and opposite force.
    advantages = torch.tensor([-1.0] * 2 + [1.0] * 6)
    scaled = advantages * torch.tensor([2.0] * 2 + [2 / 3] * 6)
    new = torch.zeros(8, requires_grad=True)
    ppo_loss(new, torch.zeros(8), scaled, torch.zeros(8), torch.zeros(8), torch.zeros(8)).policy_loss.backward()
    assert new.grad[:2].sum().item() == pytest.approx(-new.grad[2:].sum().item())
