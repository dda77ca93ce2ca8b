"""Supervised warm start: behaviour cloning of a VLA policy on recorded expert demonstrations.

Command line::

    python -m vla_rl.sft --data data/demos/expert --vla_path checkpoints/vla-init \\
        --out checkpoints/vla-sft --steps 3000 --eval_episodes 50

Each sample is (frame, proprioceptive state, instruction) -> the expert's action, tokenised
with 256 bins per dimension after the dataset's q01/q99 normalisation. The loss is the
cross-entropy of the action tokens; ``--label_sigma`` spreads each target over neighbouring
bins (a Gaussian, in bins), which respects that bins are ordered values.

Options (off by default; bench/README.md has what they measured on the default tasks):
``--grounding_weight`` adds, during cloning only, the grounding loss of :mod:`vla_rl.grounding`:
at every colour word of the prompt, where that colour's object is (needs demonstrations that
record ``colour_positions``) — a dense signal that binds the instruction to the object it
names; the head is not saved. ``--relation_weight`` adds the relation loss of the same module at the
last prompt position (how the named object stands to the gripper and to its destination, from
which the next action follows). ``--localisation_weight`` keeps the vision pretraining's objective
(:mod:`vla_rl.vision_pretrain`: which object each image token shows and where it is) on frames of
its own noisy-expert episodes while the tower is cloned: trained on the action loss alone, the
tower forgets where things are — but keeping it did not make a better policy on the default tasks
(bench/README.md, "What reaches the action"). ``--dagger_rounds`` runs DAgger after cloning
(:mod:`vla_rl.dagger`): the policy's own states, labelled by the scripted expert, join the data.

The output is a policy checkpoint (:mod:`vla_rl.policy.checkpoint`), written atomically, then
evaluated in closed loop on held-out seeds.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict

import numpy as np

from vla_rl.demonstrations import Demonstrations
from vla_rl.sft_config import SFTConfig, build_parser

_AUXILIARY_LOSSES = {  # history name: (the SFTConfig field weighing it, its progress-bar name)
    "grounding_loss": ("grounding_weight", "ground"),
    "relation_loss": ("relation_weight", "relation"),
    "localisation_loss": ("localisation_weight", "localise"),
}


def soft_targets(bins, sigma: float, num_bins: int = 256):
    """Gaussian targets over bins centred on ``bins (..., D)`` -> ``(..., D, num_bins)``."""
    import torch

    if sigma <= 0:
        return torch.nn.functional.one_hot(bins, num_bins).float()
    grid = torch.arange(num_bins, dtype=torch.float32)
    weights = torch.exp(-0.5 * ((grid - bins[..., None].float()) / sigma) ** 2)
    return weights / weights.sum(-1, keepdim=True)


def train_sft(config: SFTConfig, progress: bool = True) -> dict:
    """Clone the demonstrations into a policy saved at ``config.out``; returns a summary."""
    import torch
    from tqdm import tqdm

    import envs
    from vla_rl.atomic import atomic_directory
    from vla_rl.grounding import GroundingLoss, RelationLoss
    from vla_rl.policy.action_tokenizer import ActionStats, ActionTokenizer
    from vla_rl.policy.checkpoint import save_policy
    from vla_rl.policy.vla import VLAPolicy
    from vla_rl.qwen.loading import load_model, read_checkpoint_config
    from vla_rl.qwen.processor import QwenImageTextProcessor
    from vla_rl.vision_pretrain import LocalisationRetention

    config.validate()
    read_checkpoint_config(config.vla_path, "--vla_path")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    demos = Demonstrations.load(config.data, config.labels, config.tasks, config.relabel)
    task_names = [envs.task_name(t) for t in demos.tasks]
    unknown = sorted(set(config.dagger_tasks or []) - set(task_names))
    if unknown:
        raise ValueError(f"--dagger_tasks {' '.join(unknown)}: not among the demonstrations' tasks {task_names}.")
    auxiliary = config.grounding_weight > 0 or config.relation_weight > 0
    if auxiliary and demos.colour_positions is None:
        flag = "--grounding_weight" if config.grounding_weight > 0 else "--relation_weight"
        raise ValueError(
            f"{flag} needs demonstrations that record colour_positions; record them again with `python -m envs.demos`."
        )
    model = load_model(config.vla_path, "--vla_path", device="auto", dtype="float32")
    vocab = model.config.get_text_config().vocab_size
    stats = ActionStats.from_actions(demos.actions)
    state_stats = ActionStats.from_actions(demos.states) if config.use_state else None
    policy = VLAPolicy(
        model,
        QwenImageTextProcessor.from_pretrained(config.vla_path),
        ActionTokenizer(vocab, demos.actions.shape[1], stats),
        max_batch=config.batch_size,
        state_stats=state_stats,
    )
    policy.image_size, policy.camera = demos.image_size, demos.camera
    grounding = relation = localisation = None
    if config.localisation_weight > 0:
        episodes = config.localisation_episodes
        localisation = LocalisationRetention(
            config.vla_path, model, task_names, episodes, demos.image_size, config.seed, demos.camera
        )
    if config.grounding_weight > 0:
        grounding = GroundingLoss.for_model(model, policy.processor.tokenizer, config.grounding_layer)
    if config.relation_weight > 0:
        relation = RelationLoss.for_model(model, policy.processor.tokenizer)
    model.train()
    visual = model.model.visual
    if config.vision_lr_scale == 0:
        visual.requires_grad_(False)
    vision_ids = {id(p) for p in visual.parameters()}
    rest = [p for p in model.parameters() if id(p) not in vision_ids]
    rest += [p for head in (grounding, relation, localisation) if head is not None for p in head.parameters()]
    groups = [{"params": rest, "lr": config.learning_rate}]
    if config.vision_lr_scale > 0:
        groups.append({"params": list(visual.parameters()), "lr": config.learning_rate * config.vision_lr_scale})
    parameters = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    total_steps = config.steps + config.dagger_rounds * config.dagger_steps

    def schedule(step):
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        done = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history, rounds = [], []
    start = time.perf_counter()
    done_steps = 0

    def clone(data: Demonstrations, steps: int, desc: str) -> float:
        """``steps`` optimiser steps of behaviour cloning on ``data``; the final smoothed loss."""
        nonlocal done_steps
        tokens = torch.from_numpy(policy.action_tokenizer.encode(data.actions))
        if auxiliary:
            where, grippers = torch.from_numpy(data.colour_positions), torch.from_numpy(data.states[:, :3].copy())
        model.train()
        ema = None
        bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, dynamic_ncols=True)
        for _ in bar:
            index = rng.integers(0, len(data.actions), config.batch_size)
            batch_tokens = tokens[index]
            logits, _, hidden_states, input_ids = policy.forward_actions(
                data.images[index],
                [data.instructions[i] for i in index],
                batch_tokens,
                data.states[index] if config.use_state else None,
                return_hidden=True,
            )
            bins = batch_tokens - policy.action_tokenizer.first_id
            targets = soft_targets(bins, config.label_sigma).to(logits.device)
            loss = bc_loss = -(targets * torch.log_softmax(logits, -1)).sum(-1).mean()
            auxiliary_losses = {}  # history name -> this batch's loss, for the losses that apply to it
            if auxiliary:
                batch_where, batch_grippers = where[index].to(logits.device), grippers[index].to(logits.device)
            if grounding is not None:
                auxiliary_losses["grounding_loss"] = grounding(hidden_states, input_ids, batch_where, batch_grippers)
            if relation is not None:
                prompt_end = -(batch_tokens.shape[1] + 1)  # the last prompt position, before the action tokens
                auxiliary_losses["relation_loss"] = relation(
                    hidden_states, input_ids, batch_where, batch_grippers, position=prompt_end
                )
            if localisation is not None:
                auxiliary_losses["localisation_loss"] = localisation.loss(rng, config.batch_size)
            auxiliary_losses = {name: value for name, value in auxiliary_losses.items() if value is not None}
            for name, value in auxiliary_losses.items():
                loss = loss + getattr(config, _AUXILIARY_LOSSES[name][0]) * value
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                accuracy = float((logits.argmax(-1) == bins.to(logits.device)).float().mean())
            value = float(bc_loss.detach())
            ema = value if ema is None else 0.98 * ema + 0.02 * value
            if done_steps % 50 == 0 or done_steps == total_steps - 1:
                row = {"step": done_steps, "loss": value, "token_accuracy": accuracy}
                row.update({name: float(value.detach()) for name, value in auxiliary_losses.items()})
                history.append(row)
                postfix = {"loss": f"{ema:.3f}", "acc": f"{accuracy:.2f}"}
                postfix.update({_AUXILIARY_LOSSES[name][1]: f"{row[name]:.3f}" for name in auxiliary_losses})
                bar.set_postfix(**postfix)
            done_steps += 1
        bar.close()
        return ema

    ema = clone(demos, config.steps, "behaviour cloning")
    if config.dagger_rounds:
        from vla_rl.dagger import collect

        short = [t for t in task_names if t in (config.dagger_tasks or task_names)]
        for round_index in range(config.dagger_rounds):
            beta = config.dagger_beta * 0.5**round_index
            model.eval()
            samples = collect(
                policy,
                short,
                config.dagger_episodes,
                demos.image_size,
                seed=config.seed * 1_000 + round_index,
                beta=beta,
                max_steps=config.dagger_max_steps,
                greedy_decoding=config.dagger_decoding,
            )
            demos = demos.extended(samples)
            rounds.append(
                {
                    "round": round_index + 1,
                    "beta": beta,
                    "rollout_success": samples["success_rate"],
                    "samples": len(demos.actions),
                }
            )
            print(
                f"DAgger round {round_index + 1}: {len(samples['actions'])} states labelled (beta {beta:.2f}, "
                f"rollout success {samples['success_rate']:.2f}); {len(demos.actions)} samples in all",
                flush=True,
            )
            ema = clone(demos, config.dagger_steps, f"DAgger round {round_index + 1}")
    train_seconds = time.perf_counter() - start
    model.eval()
    retained = {} if localisation is None else {"localisation_heldout": localisation.heldout_figures()}
    with atomic_directory(config.out, config.overwrite) as tmp:
        policy.tasks = demos.tasks
        save_policy(policy, tmp)
        with open(os.path.join(tmp, "sft_summary.json"), "w") as f:
            json.dump(
                {
                    "config": asdict(config),
                    "samples": len(demos.actions),
                    "train_seconds": train_seconds,
                    "history": history,
                    "dagger": rounds,
                    **retained,
                },
                f,
                indent=2,
            )
    summary = {
        "samples": len(demos.actions),
        "train_seconds": train_seconds,
        **retained,
        "final_loss": ema,
        "tasks": demos.tasks,
        "out": config.out,
    }
    if config.eval_episodes:
        from vla_rl.evaluate import evaluate_policy

        summary["eval"] = evaluate_policy(policy, task_names, config.eval_episodes, demos.image_size, progress=progress)
        with open(os.path.join(config.out, "sft_eval.json"), "w") as f:
            json.dump(summary["eval"], f, indent=2)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    config = SFTConfig(**vars(args))
    try:
        summary = train_sft(config)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "eval"}, indent=2))
    for task, row in summary.get("eval", {}).get("tasks", {}).items():
        print(f"{task:>12}: closed-loop success {row['success_rate']:.3f} over {row['episodes']} held-out seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
