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

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from vla_rl.cli import require_at_least, require_between, require_positive, str2bool
from vla_rl.demonstrations import Demonstrations
from vla_rl.policy.action_tokenizer import GREEDY_DECODINGS


@dataclass
class SFTConfig:
    data: list[str]
    vla_path: str
    out: str
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    label_sigma: float = 1.5
    grounding_weight: float = 0.0
    grounding_layer: int = 0  # 0: the middle of the stack
    relation_weight: float = 0.0
    localisation_weight: float = 0.0
    localisation_episodes: int = 100
    relabel: bool = False
    vision_lr_scale: float = 1.0
    dagger_rounds: int = 0
    dagger_episodes: int = 100
    dagger_steps: int = 1000
    dagger_beta: float = 0.5
    dagger_max_steps: int = 0
    dagger_decoding: str = "mean"
    dagger_tasks: list | None = None
    use_state: bool = True
    labels: str = "expert"
    tasks: list | None = None
    seed: int = 0
    eval_episodes: int = 50
    overwrite: bool = False
    threads: int = 0

    def validate(self) -> None:
        for path in self.data:
            if not os.path.isfile(os.path.join(path, "meta.json")):
                raise FileNotFoundError(
                    f"--data {path}: no demonstrations there (meta.json missing); record some with "
                    "`python -m envs.demos --tasks reach --episodes 300 --out DIR`."
                )
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"--steps and --batch_size must be >= 1, got {self.steps} and {self.batch_size}.")
        require_positive(self.learning_rate, "--learning_rate")
        if self.labels not in ("expert", "executed"):
            raise ValueError(f"--labels must be 'expert' or 'executed', got {self.labels!r}.")
        if self.label_sigma < 0:
            raise ValueError(f"--label_sigma must be >= 0, got {self.label_sigma}.")
        require_at_least(self.grounding_weight, 0, "--grounding_weight")
        require_at_least(self.grounding_layer, 0, "--grounding_layer")
        require_at_least(self.relation_weight, 0, "--relation_weight")
        require_at_least(self.vision_lr_scale, 0, "--vision_lr_scale")
        require_at_least(self.localisation_weight, 0, "--localisation_weight")
        if self.localisation_weight > 0 and self.vision_lr_scale == 0:
            raise ValueError(
                "--localisation_weight keeps a trained vision tower's localisation; with --vision_lr_scale 0 the "
                "tower is frozen and keeps it anyway: set --localisation_weight 0 or --vision_lr_scale > 0."
            )
        require_at_least(self.localisation_episodes, 1, "--localisation_episodes")
        if self.dagger_rounds < 0 or self.dagger_episodes < 1 or self.dagger_steps < 1 or self.dagger_max_steps < 0:
            raise ValueError(
                "--dagger_rounds and --dagger_max_steps must be >= 0, --dagger_episodes and --dagger_steps >= 1."
            )
        if self.dagger_decoding not in GREEDY_DECODINGS:
            raise ValueError(f"--dagger_decoding must be one of {GREEDY_DECODINGS}, got {self.dagger_decoding!r}.")
        require_between(self.dagger_beta, 0, 1, "--dagger_beta")
        if self.eval_episodes < 0:
            raise ValueError(f"--eval_episodes must be >= 0, got {self.eval_episodes}.")
        if os.path.exists(self.out) and not self.overwrite:
            raise FileExistsError(f"--out {self.out} already exists; pass --overwrite to replace it.")


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
    parser = argparse.ArgumentParser(prog="python -m vla_rl.sft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="demonstration directories (envs.demos format)")
    parser.add_argument("--vla_path", required=True, help="initial Qwen2-VL checkpoint (python -m vla_rl.qwen.build)")
    parser.add_argument("--out", required=True, help="output policy checkpoint directory")
    defaults = SFTConfig(data=[], vla_path="", out="")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps")
    parser.add_argument("--batch_size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning_rate", type=float, default=defaults.learning_rate, help="AdamW peak rate")
    parser.add_argument("--weight_decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--warmup_steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--label_sigma", type=float, default=defaults.label_sigma, help="soft-target width, bins")
    parser.add_argument(
        "--grounding_weight",
        type=float,
        default=defaults.grounding_weight,
        help="weight of the grounding loss at the prompt's colour words (0: off; needs demos with colour_positions)",
    )
    parser.add_argument(
        "--grounding_layer",
        type=int,
        default=defaults.grounding_layer,
        help="hidden state the grounding loss reads (1 = after the first layer; 0: the middle of the stack)",
    )
    parser.add_argument(
        "--relation_weight",
        type=float,
        default=defaults.relation_weight,
        help="weight of the relation loss at the last prompt position: how the named object stands to the gripper "
        "and to its destination (vla_rl.grounding.RelationLoss; 0: off; needs demos with colour_positions)",
    )
    parser.add_argument(
        "--localisation_weight",
        type=float,
        default=defaults.localisation_weight,
        help="weight of the vision pretraining's localisation loss on the tower while it is cloned "
        "(vla_rl.vision_pretrain; 0: off; needs --vision_lr_scale > 0)",
    )
    parser.add_argument(
        "--localisation_episodes",
        type=int,
        default=defaults.localisation_episodes,
        help="noisy-expert episodes per task recorded for --localisation_weight",
    )
    parser.add_argument(
        "--relabel",
        type=str2bool,
        default=defaults.relabel,
        help="add the demos' counterfactual samples (same frame, another object named, the expert's action for it)",
    )
    parser.add_argument(
        "--vision_lr_scale",
        type=float,
        default=defaults.vision_lr_scale,
        help="learning rate of the vision tower relative to the rest (0 freezes it, e.g. after vla_rl.vision_pretrain)",
    )
    parser.add_argument("--use_state", type=str2bool, default=defaults.use_state, help="read the proprio state")
    parser.add_argument(
        "--labels",
        choices=("expert", "executed"),
        default=defaults.labels,
        help="clone the expert's noise-free actions or the executed (noisy) ones",
    )
    parser.add_argument("--tasks", nargs="+", default=None, help="train on these tasks' episodes only")
    parser.add_argument("--dagger_rounds", type=int, default=defaults.dagger_rounds, help="DAgger rounds after cloning")
    parser.add_argument(
        "--dagger_episodes", type=int, default=defaults.dagger_episodes, help="policy episodes per task per round"
    )
    parser.add_argument(
        "--dagger_tasks",
        nargs="+",
        default=None,
        help="tasks whose policy episodes DAgger labels (default: every task of the data); cloning still "
        "samples all of the data",
    )
    parser.add_argument(
        "--dagger_steps", type=int, default=defaults.dagger_steps, help="cloning steps after each DAgger round"
    )
    parser.add_argument(
        "--dagger_beta", type=float, default=defaults.dagger_beta, help="expert share of round 1 (halved per round)"
    )
    parser.add_argument(
        "--dagger_max_steps",
        type=int,
        default=defaults.dagger_max_steps,
        help="longest DAgger rollout episode (0: each task's own step limit)",
    )
    parser.add_argument(
        "--dagger_decoding",
        choices=GREEDY_DECODINGS,
        default=defaults.dagger_decoding,
        help="how the policy's DAgger actions are decoded: as the evaluation does (mean: nearest the expected bin) "
        "or the most likely bins",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval_episodes", type=int, default=defaults.eval_episodes, help="held-out seeds per task")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
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
