"""The PPO trainer behind ``python -m vla_rl.train`` (see :mod:`vla_rl.train`).

One iteration: a rollout of ``num_steps x num_envs`` (:mod:`vla_rl.rollout`; PRM scoring deferred
to the end of the rollout by default), GAE, ``num_epochs`` of clipped PPO over
``num_minibatches`` minibatches (each accumulated in forward batches of
``local_rollout_forward_batch_size``), metrics, and a checkpoint every ``save_freq`` iterations.
The run ends after ``total_episodes`` finished episodes (or ``max_iterations``) with a final
checkpoint and an evaluation on held-out seeds with annotated videos.

Under ``torchrun`` with FSDP every rank runs this same loop on its own envs; the ranks meet in
the update, in the reductions of counts and metrics (:mod:`vla_rl.distributed.ranks`) and in
checkpoint saves; rank 0 alone logs, writes files and evaluates.

Run directory ``run_root_dir/exp_name``: ``config.json``, ``metrics.jsonl``, ``tensorboard/``,
``learning_curve.png``, ``videos/`` (training episodes), ``checkpoints/iter_NNNNNN/`` (+ a
``latest`` pointer), ``eval/`` (summary JSON and videos of the final policy).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time

import numpy as np
import torch

from vla_rl import keys, seed_ranges
from vla_rl.checkpointing import (
    CHECKPOINTS,
    latest_checkpoint,
    load_run_policy,
    load_trainer_state,
    restore_trainer_state,
    save_checkpoint,
)
from vla_rl.config import TrainConfig
from vla_rl.distributed.fsdp import full_tensor, gathered, lora_template, shard_policy
from vla_rl.distributed.ranks import SINGLE, Ranks, join_ranks
from vla_rl.distributed.runtime import training_env
from vla_rl.ppo import compute_gae, episode_weights, group_advantages, normalize_advantages, ppo_loss

logger = logging.getLogger("vla_rl.train")


def rollout_seed(run_seed: int, iteration: int, rank: int = 0) -> int:
    """The first initial-state seed of the rollouts of run ``run_seed`` from ``iteration`` on."""
    return seed_ranges.ROLLOUTS + run_seed * 100_003 + iteration * 1_009 + rank * 10_000_019


# ----------------------------------------------------------------------------- PPO update
TRAIN_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "ratio_mean")


def ppo_update(
    policy,
    optimizer,
    batch,
    advantages,
    returns,
    config: TrainConfig,
    reference=None,
    ranks: Ranks = SINGLE,
    samples: np.ndarray | None = None,
) -> dict:
    """``num_epochs`` of clipped PPO over the valid samples of ``batch`` (or the ``samples``
    mask, ``(T, N)``); mean metrics.

    With several ``ranks`` (FSDP) each rank holds its own batch; a minibatch is the union of
    the ranks' minibatches and its loss is the mean over all of them (each rank scales its
    samples by ``world / total``, and FSDP averages the gradients). Ranks with fewer forward
    passes in a minibatch add zero-weight ones, so every rank runs the same collectives; the
    early stop on ``target_kl`` and the metrics use the ranks' sums."""
    ppo = config.ppo
    T, N = batch.valid.shape
    flat = np.flatnonzero((batch.valid if samples is None else samples).reshape(-1))
    images = batch.images.reshape(T * N, *batch.images.shape[2:])
    states = batch.states.reshape(T * N, -1)
    instructions = [text for row in batch.instructions for text in row]
    token_ids = batch.token_ids.reshape(T * N, -1)
    old_logprobs = batch.logprobs.reshape(-1)
    old_values = batch.values.reshape(-1)
    advantages, returns = advantages.reshape(-1), returns.reshape(-1)
    micro = config.policy.local_rollout_forward_batch_size
    names = [f"train/{name}" for name in TRAIN_METRICS] + ["train/grad_norm"]
    if reference is not None and ppo.kl_coef > 0:
        names.append("train/kl_ref")
    sums = dict.fromkeys(names, 0.0)
    count = 0
    stop = False
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    for _ in range(ppo.num_epochs):
        order = np.random.permutation(flat)
        for minibatch in np.array_split(order, ppo.num_minibatches):
            total = ranks.sum([len(minibatch)])[0]
            if total == 0:
                continue
            optimizer.zero_grad(set_to_none=True)
            for step in range(ranks.max(-(-len(minibatch) // micro))):
                index = minibatch[step * micro : (step + 1) * micro]
                weight = len(index) * ranks.world / total
                if len(index) == 0:  # this rank has run out: a zero-weight pass keeps it in step
                    index, weight = np.zeros(1, dtype=np.int64), 0.0
                idx = torch.from_numpy(index)
                inputs = (
                    images[index],
                    [instructions[i] for i in index],
                    token_ids[idx],
                    states[index] if policy.state_stats is not None else None,
                )
                out = policy.evaluate(*inputs, temperature=config.policy.temperature)
                terms = ppo_loss(
                    out["logprobs"],
                    old_logprobs[idx].to(out["logprobs"].device),
                    advantages[idx].to(out["logprobs"].device),
                    out["values"],
                    old_values[idx].to(out["values"].device),
                    returns[idx].to(out["values"].device),
                    entropy=out["entropy"],
                    clip_coef=ppo.clip_coef,
                    value_clip=ppo.value_clip or None,
                    value_coef=ppo.value_coef,
                    entropy_coef=ppo.entropy_coef,
                )
                loss = terms.loss
                if "train/kl_ref" in sums:
                    with torch.no_grad():
                        ref = reference.evaluate(*inputs, temperature=config.policy.temperature)["logprobs"]
                    log_ratio = ref.to(out["logprobs"].device) - out["logprobs"]
                    kl = (log_ratio.exp() - log_ratio - 1).mean()  # k3 estimator of KL(pi || ref)
                    loss = loss + ppo.kl_coef * kl
                    sums["train/kl_ref"] += float(kl.detach()) * len(index) * (weight > 0)
                (loss * weight).backward()
                if weight > 0:
                    for name in TRAIN_METRICS:
                        sums[f"train/{name}"] += float(getattr(terms, name).detach()) * len(index)
                    count += len(index)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, ppo.max_grad_norm)
            sums["train/grad_norm"] += float(full_tensor(grad_norm)) * len(minibatch)
            optimizer.step()
        if ppo.target_kl:
            kl_sum, kl_count = ranks.sum([sums["train/approx_kl"], count])
            if kl_sum / max(kl_count, 1) > ppo.target_kl:
                stop = True
                break
    *totals, count = ranks.sum([sums[name] for name in names] + [count])
    metrics = {name: value / max(count, 1) for name, value in zip(names, totals, strict=True)}
    metrics["train/early_stop"] = float(stop)
    return metrics


# ----------------------------------------------------------------------------- the run
def _quiet(*args, **kwargs) -> None:
    """``print`` of the ranks other than 0."""


def _normalized(advantages: torch.Tensor, valid: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Advantages normalised with the mean and std of every rank's valid samples."""
    if ranks.world == 1:
        return normalize_advantages(advantages, valid)
    mask = valid.float()
    total, squares, count = ranks.sum(
        [float((advantages * mask).sum()), float((advantages**2 * mask).sum()), float(mask.sum())]
    )
    mean = total / max(count, 1.0)
    std = max(squares / max(count, 1.0) - mean**2, 0.0) ** 0.5
    return (advantages - mean) / (std + 1e-8)


def checked_run_dir(config: TrainConfig) -> str | None:
    """The checkpoint to resume (``None``: a new run); refuses a new run over an old one."""
    resume_from = latest_checkpoint(config.run_dir) if config.run.resume else None
    if config.run.resume and resume_from is None:
        raise FileNotFoundError(f"--resume True but {config.run_dir} has no checkpoint; start without --resume.")
    if not config.run.resume and os.path.isdir(os.path.join(config.run_dir, CHECKPOINTS)):
        raise FileExistsError(
            f"{config.run_dir} already holds a run; pass --resume True to continue it or a new --exp_name."
        )
    return resume_from


def train(config: TrainConfig) -> dict:
    """Run PPO as configured; returns the final summary (also written to ``summary.json``)."""
    from vla_rl.episode_videos import EpisodeVideos
    from vla_rl.metrics import MetricLogger
    from vla_rl.policy.checkpoint import load_policy
    from vla_rl.rollout import Rollout, assign_tasks, rollout_metrics, step_limit

    run_dir = config.run_dir
    resume_from = checked_run_dir(config)
    if config.scale.backends.launch_ranks > 1:  # this process only launches the ranks (Ray Train workers)
        from vla_rl.distributed.ray_train import launch_ranks

        print(config.scale.backends.describe(), flush=True)
        return launch_ranks(config)
    ranks = join_ranks() if config.scale.backends.fsdp else SINGLE
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    random.seed(config.run.seed + ranks.rank)
    np.random.seed(config.run.seed + ranks.rank)
    torch.manual_seed(config.run.seed + ranks.rank)
    say = print if ranks.is_main else _quiet
    if ranks.is_main:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=2)
    say(config.scale.backends.describe(), flush=True)

    lora = config.policy.lora_rank > 0
    if ranks.world > 1:  # every rank builds the same policy (LoRA's random init included) before sharding
        torch.manual_seed(config.run.seed)
    policy = load_run_policy(config, resume_from)
    template = None
    if ranks.world > 1:
        template = lora_template(policy) if lora else None
        shard_policy(policy)
        torch.manual_seed(config.run.seed + ranks.rank)
    policy.value_trunk_grad = config.ppo.value_trunk_grad
    reference = None
    if config.ppo.kl_coef > 0:
        reference = load_policy(
            config.policy.vla_path,
            device=config.policy.device,
            max_batch=config.policy.local_rollout_forward_batch_size,
        )
        reference.requires_grad_(False)
    image_size = config.env.image_size or policy.image_size or 56
    tasks = config.env.tasks

    grouped = config.ppo.grouped
    assigned = assign_tasks(tasks, config.env.num_envs, config.ppo.group_size if grouped else 1)
    runtime = training_env(config, assigned, image_size, ranks, policy.camera)
    env = runtime.env
    per_rank = f" per rank x {ranks.world} ranks" if ranks.world > 1 else ""
    prm_size, prm_camera = config.prm.frame_size(), config.prm.frame_camera()
    sizes = f"{image_size} px" + (f" (PRM frames {prm_size} px)" if prm_size and prm_size != image_size else "")
    sizes += f", {policy.camera} view" if policy.camera != keys.FRONT_CAMERA else ""
    sizes += f" (PRM camera {prm_camera})" if prm_camera not in (None, policy.camera) else ""
    say(f"{runtime.description}; tasks {tasks}; {config.env.num_envs} envs{per_rank} at {sizes}", flush=True)

    policy.model.train()
    model_params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": model_params, "lr": config.ppo.learning_rate},
            {"params": list(policy.value_head.parameters()), "lr": config.ppo.value_learning_rate},
        ],
        weight_decay=0.0,
        eps=1e-5,
    )
    state = {"iteration": 0, "global_step": 0, "episodes": 0}
    if resume_from is not None:
        saved = load_trainer_state(resume_from)
        restore_trainer_state(saved, policy, optimizer, ranks)
        state = {k: saved[k] for k in state}
        say(f"resumed from {resume_from} at iteration {state['iteration']}, step {state['global_step']}", flush=True)
    actor = policy
    if config.scale.backends.rollout == "vllm":
        from vla_rl.policy.vllm_rollout import VLLMRollout

        actor = VLLMRollout(policy, config.scale.vllm_gpu_memory_utilization, seed=config.run.seed)

    def handover_probability() -> float | None:
        """Set the sub-envs' hand-over probability for the episodes that start next (None: off)."""
        if config.env.handover() is None:
            return None
        from vla_rl.distributed.env_workers import sync_env

        probability = config.env.handover_probability_at(state["episodes"], config.ppo.total_episodes)
        sync_env(env).call("set_handover_probability", probability)
        return probability

    handover_probability()  # before the first reset
    videos = metrics_log = None
    if config.run.save_video and ranks.is_main:
        videos = EpisodeVideos(
            os.path.join(run_dir, "videos"),
            assigned,
            config.run.video_every,
            config.run.max_videos,
            config.prm.decision_threshold(),
            inset=prm_camera not in (None, policy.camera),  # the PRM's frames come from another camera
        )
    rollout = Rollout(
        env,
        actor,
        assigned,
        step_limit(tasks, config.env.max_env_length) if grouped else config.ppo.num_steps,
        config.policy.temperature,
        seed=rollout_seed(config.run.seed, state["iteration"], ranks.rank),
        group_size=config.ppo.group_size if grouped else 0,
        keep_prm_frames=videos is not None and videos.inset,
    )
    if ranks.is_main:
        metrics_log = MetricLogger(
            run_dir,
            config.to_dict(),
            config.run.use_wandb,
            config.run.wandb_offline,
            config.run.wandb_project,
            config.run_name,
        )
    from tqdm import tqdm

    bar = tqdm(
        total=config.ppo.total_episodes,
        initial=min(state["episodes"], config.ppo.total_episodes),
        desc="PPO",
        unit="ep",
        disable=not (config.run.progress and ranks.is_main),
        dynamic_ncols=True,
    )
    totals = {"env": 0.0, "policy": 0.0, "prm": 0.0, "update": 0.0}
    try:
        while state["episodes"] < config.ppo.total_episodes and not (
            config.ppo.max_iterations and state["iteration"] >= config.ppo.max_iterations
        ):
            start = time.perf_counter()
            probability = handover_probability()
            policy.model.eval()
            with gathered(policy) if ranks.world > 1 else contextlib.nullcontext():
                batch = rollout.collect()
            rollout_seconds = time.perf_counter() - start
            if videos is not None:
                actions = policy.action_tokenizer.decode(batch.token_ids.numpy())
                videos.add(batch, rollout.observations, actions)
            rewards, valid = torch.from_numpy(batch.rewards).float(), torch.from_numpy(batch.valid)
            advantages, returns = compute_gae(
                rewards,
                batch.values,
                batch.next_values,
                torch.from_numpy(batch.terminated),
                torch.from_numpy(batch.truncated),
                valid,
                config.ppo.gamma,
                1.0 if grouped else config.ppo.gae_lambda,  # grouped: the value head learns Monte-Carlo returns
            )
            samples = None
            if grouped:
                advantages = group_advantages(
                    rewards, valid, config.ppo.group_size, config.ppo.advantage_estimator, config.ppo.group_credit
                )
                if config.ppo.loss_aggregation == "episode":  # a long episode's actions count less each
                    advantages = advantages * episode_weights(valid)
                # Episodes of groups whose returns tie carry no policy gradient: they are left out of the update.
                samples = batch.valid & (advantages != 0).numpy()
                with_signal = (advantages != 0).any(0).numpy()  # per sub-env (column)
            rewardless = (
                config.ppo.skip_rewardless_batches
                and not ranks.sum([float(np.abs(batch.rewards).sum() if samples is None else samples.sum())])[0]
            )
            if rewardless:  # no reward (grouped: no group with signal); only the value head learns
                advantages = torch.zeros_like(advantages)
            elif config.ppo.norm_adv and config.ppo.advantage_estimator != "grpo":  # grpo's are normalised per group
                used = valid if samples is None else torch.from_numpy(samples)  # the samples the update sees
                advantages = torch.where(used, _normalized(advantages, used, ranks), torch.zeros_like(advantages))
            update_start = time.perf_counter()
            policy.model.train()
            learning_rate = 0.0 if rewardless else config.ppo.learning_rate_at(state["episodes"])  # Adam momentum too
            optimizer.param_groups[0]["lr"] = learning_rate
            # A rewardless batch trains only the value head, on every valid sample (as in a rewardless gae batch).
            used_samples = None if rewardless else samples
            metrics = ppo_update(policy, optimizer, batch, advantages, returns, config, reference, ranks, used_samples)
            metrics["train/rewardless_batch"], metrics["train/learning_rate"] = float(rewardless), learning_rate
            if grouped:
                metrics["train/episodes_with_signal"] = float(with_signal.mean())
                for task in sorted(set(assigned)):  # which tasks give the update something to learn from
                    columns = [i for i, name in enumerate(assigned) if name == task]
                    metrics[f"train/episodes_with_signal/{task}"] = float(with_signal[columns].mean())
            if probability is not None:
                metrics["rollout/handover_probability"] = probability
            update_seconds = time.perf_counter() - update_start
            if actor is not policy:  # the vLLM engine gets the updated weights, checked on this rollout's frames
                probe_states = batch.states[0] if policy.state_stats is not None else None
                metrics.update(actor.sync(probe=(batch.images[0], batch.instructions[0], probe_states)))
            episodes = [e for part in ranks.gather(batch.episodes) for e in part]
            steps, dropped = ranks.sum([int(batch.valid.sum()), batch.dropped_episodes])
            state["iteration"] += 1
            state["global_step"] += int(steps)
            state["episodes"] += len(episodes)
            metrics.update(rollout_metrics(batch, rollout_seconds, episodes, int(dropped)))
            metrics.update(runtime.counters())
            for key, seconds in (*batch.timing.items(), ("update", update_seconds)):
                totals[key] += seconds
                metrics[f"perf/time_{key}"] = seconds
            overall = sum(totals.values())
            for key, seconds in totals.items():
                metrics[f"perf/share_{key}"] = seconds / max(overall, 1e-9)
            metrics["progress/episodes"] = state["episodes"]
            metrics["progress/iteration"] = state["iteration"]
            if metrics_log is not None:
                metrics_log.log(metrics, state["global_step"])
                bar.update(min(state["episodes"], config.ppo.total_episodes) - bar.n)
                success = metrics.get("rollout/success_rate", float("nan"))
                bar.set_postfix(it=state["iteration"], success=f"{success:.2f}")
                tqdm.write(
                    f"iter {state['iteration']:4d} | episodes {state['episodes']:5d} | {metrics_log.line(metrics)}"
                )
            if state["iteration"] % config.run.save_freq == 0:
                save_checkpoint(
                    run_dir,
                    state["iteration"],
                    policy,
                    optimizer,
                    {**state, "config": config.to_dict()},
                    lora,
                    ranks,
                    template,
                )
    finally:
        bar.close()
        env.close()
        if videos is not None:
            videos.close()
    final = save_checkpoint(
        run_dir, state["iteration"], policy, optimizer, {**state, "config": config.to_dict()}, lora, ranks, template
    )
    if ranks.world > 1:  # the ranks are done together; rank 0 evaluates the gathered checkpoint alone
        torch.distributed.destroy_process_group()
        if not ranks.is_main:
            runtime.close()
            return {"run_dir": run_dir, "final_checkpoint": final, "rank": ranks.rank, **state}
        policy = load_policy(
            os.path.join(final, "policy"),
            device=config.policy.device,
            max_batch=config.policy.local_rollout_forward_batch_size,
        )
    metrics_log.close()
    summary = {
        "run_dir": run_dir,
        "final_checkpoint": final,
        **state,
        "time_share": {k: v / max(sum(totals.values()), 1e-9) for k, v in totals.items()},
        "seconds": totals,
    }
    if config.run.eval_episodes:
        from vla_rl.evaluate import evaluate_run

        summary["eval"] = evaluate_run(
            policy, config, tasks, image_size, run_dir, runtime.eval_prm, prm_size, prm_camera
        )
    runtime.close()
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(f"run written to {run_dir} (learning curve: {os.path.join(run_dir, 'learning_curve.png')})")
    return summary
