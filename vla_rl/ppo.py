"""PPO arithmetic: generalised advantage estimation, group-relative advantages and the clipped
losses.

Kept free of models and environments so that it can be checked against hand-computed cases.
``terminated`` and ``truncated`` stay apart: a terminated step has no future value, a
truncated one is bootstrapped from the value of the observation where it was cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    valid: torch.Tensor | None = None,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, all ``(T, N)``.

    Args:
        rewards: reward of step t.
        values: V(s_t).
        next_values: V(s_{t+1}) for the observation that step t produced — for a truncated
            step, the observation at which the episode was cut (with next-step autoreset this
            is the observation returned by that very step).
        terminated, truncated: episode ends at step t (bool).
        valid: False for steps that are not transitions (the autoreset steps of vector envs);
            they get zero advantage and do not link the steps around them.
    """
    terminated, truncated = terminated.bool(), truncated.bool()
    valid = torch.ones_like(terminated) if valid is None else valid.bool()
    bootstrap = next_values * (~terminated).to(values.dtype)
    deltas = (rewards + gamma * bootstrap - values) * valid.to(values.dtype)
    continues = (~(terminated | truncated) & valid).to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[0])
    for t in reversed(range(len(rewards))):
        running = deltas[t] + gamma * lam * continues[t] * running
        advantages[t] = running * valid[t].to(values.dtype)
    return advantages, advantages + values


ADVANTAGE_ESTIMATORS = ("gae", "grpo", "rloo")
GROUP_CREDITS = ("episode", "to_go")


def group_advantages(
    rewards: torch.Tensor,
    valid: torch.Tensor,
    group_size: int,
    estimator: str = "grpo",
    credit: str = "episode",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Group-relative advantages of episodic rollouts, ``(T, N)``.

    Every sub-env (column) holds one episode; groups of ``group_size`` consecutive columns
    started from the same initial state. An episode's return ``R`` (the sum of its valid
    rewards) is compared with its group's: ``grpo`` gives ``(R - mean) / std`` (GRPO), ``rloo``
    gives ``R`` minus the mean of the other episodes of the group (RLOO). Every valid step of
    the episode gets that value (``credit="episode"``); a group whose returns are all equal gives
    zero (it holds no signal about which actions were better).

    ``credit="to_go"`` scores each step by its reward-to-go ``G_t`` (the episode's rewards from
    that step on) against the same group baseline: the episode's score less the rewards before
    the step, in the score's units (``(G_t - mean) / std``; ``G_t`` minus the others' mean). The
    rewards before an action do not depend on it, so this is the same gradient in expectation
    with less noise; with the PRM's potential shaping ``G_t`` is the success plus the progress
    the PRM sees from that step on, so each step is credited with what followed it (the PRM's
    score acts as a per-step baseline) rather than the whole episode's.
    """
    if estimator not in ("grpo", "rloo"):
        raise ValueError(f"group advantages are 'grpo' or 'rloo', not {estimator!r}.")
    if credit not in GROUP_CREDITS:
        raise ValueError(f"group credit is one of {GROUP_CREDITS}, not {credit!r}.")
    mask = valid.to(rewards.dtype)
    returns = (rewards * mask).sum(0)
    if returns.numel() % group_size:
        raise ValueError(f"group_size {group_size} must divide the number of episodes ({returns.numel()}).")
    grouped = returns.view(-1, group_size)
    mean = grouped.mean(1, keepdim=True)
    spread = grouped.std(1, unbiased=False, keepdim=True)
    if estimator == "grpo":
        scores = (grouped - mean) / (spread + eps)
    else:
        scores = (grouped - mean) * group_size / (group_size - 1)  # R_i - mean of the others

    def per_episode(per_group: torch.Tensor) -> torch.Tensor:  # (groups, 1) -> (1, N), under each episode
        return per_group.expand_as(grouped).reshape(1, -1)

    signal = per_episode(spread > eps)
    scores = torch.where(signal, scores.reshape(1, -1), 0.0)
    if credit == "to_go":
        unit = per_episode(spread + eps if estimator == "grpo" else torch.ones_like(spread))
        before = torch.cumsum(rewards * mask, 0) - rewards * mask  # the valid rewards before each step
        scores = torch.where(signal, scores - before / unit, 0.0)
    return scores * mask


def episode_weights(valid: torch.Tensor) -> torch.Tensor:
    """Per-episode weights ``(1, N)`` that give every episode (column) of ``valid`` the same
    total weight in a mean over samples: its mean length over its own, so the weights of all
    samples still average 1. Scaling the advantages by them is the same as weighting the clipped
    surrogate per sample (it is linear in the advantage)."""
    lengths = valid.sum(0, keepdim=True).to(torch.float32)
    return torch.where(lengths > 0, lengths[lengths > 0].mean() / lengths.clamp(min=1.0), torch.zeros_like(lengths))


@dataclass
class LossTerms:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor
    ratio_mean: torch.Tensor


def _mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def ppo_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    clip_coef: float = 0.2,
    value_clip: float | None = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.0,
) -> LossTerms:
    """The clipped surrogate, the (optionally clipped) value loss and the entropy bonus.

    All inputs are 1-D over samples; ``old_logprobs`` come from the rollout, so the ratio is
    not 1 by construction when the policy has moved. ``mask`` excludes padding samples."""
    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    surrogate = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef))
    policy_loss = _mean(surrogate, mask)
    unclipped = (new_values - returns) ** 2
    if value_clip is not None:
        clipped_values = old_values + (new_values - old_values).clamp(-value_clip, value_clip)
        unclipped = torch.max(unclipped, (clipped_values - returns) ** 2)
    value_loss = 0.5 * _mean(unclipped, mask)
    entropy_mean = _mean(entropy, mask) if entropy is not None else torch.zeros((), dtype=ratio.dtype)
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy_mean
    with torch.no_grad():
        approx_kl = _mean((ratio - 1) - log_ratio, mask)
        clipfrac = _mean(((ratio - 1).abs() > clip_coef).to(ratio.dtype), mask)
        ratio_mean = _mean(ratio, mask)
    return LossTerms(loss, policy_loss, value_loss, entropy_mean, approx_kl, clipfrac, ratio_mean)


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8):
    """Zero mean, unit variance over the (masked) samples."""
    mean = _mean(advantages, mask)
    std = _mean((advantages - mean) ** 2, mask).sqrt()
    return (advantages - mean) / (std + eps)
