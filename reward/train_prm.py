"""Train a Qwen2-VL process reward model on a simulator-labelled dataset (:mod:`reward.data`).

Command line::

    python -m reward.train_prm --data data/prm/expert --model_name_or_path assets/models/prm-init \\
        --out runs/prm --target progress --max_steps 3000

``--data`` takes one or more dataset directories (e.g. scripted-expert episodes and the current
policy's own rollouts, ``reward.data --method policy``); their splits are concatenated, so a
PRM fine-tuned on the mix also sees the states the policy visits.

The PRM is trained as next-token prediction restricted to its two answer tokens ("Yes"/"No" by
default) at the answer position of the prompt ``<image> The task is {instruction}, is it
completed?``: a cross-entropy between the 2-way softmax and the row's target probability (hard
for completion/HE, soft for SE and progress), with positive and negative frames weighted to
equal total weight (class balancing). Real checkpoints are fine-tuned with LoRA (r=16, alpha=32,
every linear layer of the language model; the vision tower stays frozen); small ones fully.

Outputs (``--out``)::

    checkpoint-N/        Hugging Face Trainer checkpoints (resumable with --resume True)
    final_checkpoint/    LoRA: the adapter (pass it as --prm_checkpoint_path, with the base model as
                         --prm_model_name_or_path); full: a complete checkpoint (pass it as
                         --prm_model_name_or_path). Holds prm_config.json (prompt, answer tokens,
                         frame size, and the decision threshold and causal score window with the
                         best F1 on the validation split, which PRM rewards and evaluation use
                         unless told otherwise).
    prm_train_summary.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

from reward import labels as L
from reward.dataset import merged_meta
from reward.prm_trainer import FrameCollator, FrameDataset, compute_metrics, make_trainer_class, tune_threshold
from vla_rl import keys
from vla_rl.cli import str2bool

PRM_CONFIG_FILE = "prm_config.json"
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
FULL_FINETUNE_MAX_PARAMS = 100_000_000


@dataclass
class PRMTrainConfig:
    data: list[str] | str  # one dataset directory or several (their splits are concatenated)
    model_name_or_path: str
    out: str
    target: str = "completion"
    progress_weight: float = 0.4
    finetune: str = "auto"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    answer_tokens: str = "yes_no"
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float | None = None
    warmup_ratio: float = 0.05
    eval_steps: int = 200
    save_steps: int = 200
    save_total_limit: int = 3
    logging_steps: int = 50
    class_balance: bool = True
    grounding_weight: float = 0.0
    grounding_layer: int = 0  # 0: the middle of the stack
    relation_weight: float = 0.0
    colour_permutation: float = 0.0
    freeze_vision: bool = False
    max_score_window: int = 4
    seed: int = 0
    resume: bool = False
    overwrite: bool = False

    def validate(self) -> None:
        from reward.qwen_prm import ANSWER_PAIRS
        from vla_rl.qwen.loading import read_checkpoint_config

        checks = [
            (self.target in L.TARGETS, f"--target must be one of {L.TARGETS}, got {self.target!r}"),
            (0 <= self.progress_weight <= 0.5, f"--progress_weight must be in [0, 0.5], got {self.progress_weight}"),
            (
                self.finetune in ("auto", "full", "lora"),
                f"--finetune must be auto, full or lora, got {self.finetune!r}",
            ),
            (self.answer_tokens in ANSWER_PAIRS, f"--answer_tokens must be one of {sorted(ANSWER_PAIRS)}"),
            (self.lora_r >= 1 and self.lora_alpha >= 1, "--lora_r and --lora_alpha must be >= 1"),
            (self.epochs > 0 or self.max_steps > 0, "set --epochs > 0 or --max_steps > 0"),
            (self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
            (
                self.learning_rate is None or self.learning_rate > 0,
                f"--learning_rate must be > 0, got {self.learning_rate}",
            ),
            (
                min(self.eval_steps, self.save_steps, self.logging_steps) >= 1,
                "--eval_steps/--save_steps/--logging_steps >= 1",
            ),
            (self.grounding_weight >= 0, f"--grounding_weight must be >= 0, got {self.grounding_weight}"),
            (self.grounding_layer >= 0, f"--grounding_layer must be >= 0, got {self.grounding_layer}"),
            (self.relation_weight >= 0, f"--relation_weight must be >= 0, got {self.relation_weight}"),
            (1 <= self.max_score_window <= 16, f"--max_score_window must be in 1..16, got {self.max_score_window}"),
            (
                0 <= self.colour_permutation <= 1,
                f"--colour_permutation must be in [0, 1], got {self.colour_permutation}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message + ".")
        self.data = [self.data] if isinstance(self.data, str) else list(self.data)
        merged_meta(self.data)
        read_checkpoint_config(self.model_name_or_path, "--model_name_or_path")
        if os.path.exists(self.out) and os.listdir(self.out) and not (self.resume or self.overwrite):
            raise FileExistsError(f"--out {self.out} exists; pass --resume True to continue it or --overwrite True.")


def prepare_model(config: PRMTrainConfig):
    """The model to train: LoRA-wrapped (vision tower frozen) or fully trainable."""
    from vla_rl.qwen.loading import load_model

    model = load_model(config.model_name_or_path, "--model_name_or_path", device="auto", dtype="float32")
    total = sum(p.numel() for p in model.parameters())
    mode = config.finetune if config.finetune != "auto" else ("full" if total <= FULL_FINETUNE_MAX_PARAMS else "lora")
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=LORA_TARGETS,
            bias="none",
        )
        model = get_peft_model(model, lora)
    elif config.freeze_vision:
        model.model.visual.requires_grad_(False)
    model.train()
    return model, mode, total


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def training_arguments(config: PRMTrainConfig, mode: str):
    from transformers import TrainingArguments

    learning_rate = config.learning_rate or (1e-3 if mode == "full" else 1e-4)
    return TrainingArguments(
        output_dir=config.out,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to=[],
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        label_names=["targets"],
        dataloader_num_workers=0,
        use_cpu=not _cuda(),
        bf16=_cuda(),
    )


def prm_config(config: PRMTrainConfig, mode: str, meta: dict, tuned: tuple[int, float, float] | None = None) -> dict:
    """What a scorer needs to ask the trained PRM the question it was trained on, and where to
    cut its P(completed): ``tuned`` is (score window, threshold, F1 there) on the validation split."""
    from reward.qwen_prm import ANSWER_PAIRS, DEFAULT_PROMPT, threshold_fields

    where = f"validation split of {', '.join(config.data)}"
    threshold = threshold_fields(tuned[1], tuned[2], where, window=tuned[0]) if tuned else {}
    return {
        "prompt_template": DEFAULT_PROMPT,
        "answer_tokens": list(ANSWER_PAIRS[config.answer_tokens]),
        "target": config.target,
        "progress_weight": config.progress_weight,
        "finetune": mode,
        "base_model": config.model_name_or_path,
        "dataset": config.data,
        "dataset_seeds": meta.get("seeds", {}),
        "image_size": meta.get("image_size"),
        "camera": meta.get("camera", keys.FRONT_CAMERA),
        **threshold,
    }


def write_final(trainer, processor, out: str, extra: dict) -> str:
    """Write ``final_checkpoint/`` atomically: the adapter (LoRA) or the full checkpoint, the
    processor files and ``prm_config.json``."""
    from vla_rl.atomic import atomic_directory

    final = os.path.join(out, "final_checkpoint")
    with atomic_directory(final, overwrite=True) as tmp:
        trainer.model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        with open(os.path.join(tmp, PRM_CONFIG_FILE), "w") as f:
            json.dump(extra, f, indent=1)
    return final


def train_prm(config: PRMTrainConfig) -> dict:
    """Train and evaluate; returns the summary written to ``prm_train_summary.json``."""
    config.validate()
    import shutil

    import torch
    from transformers.trainer_utils import get_last_checkpoint

    from reward.dataset import load_rows
    from reward.qwen_prm import ANSWER_PAIRS, DEFAULT_PROMPT, answer_token_ids
    from vla_rl.qwen.processor import QwenImageTextProcessor

    if config.overwrite and not config.resume and os.path.isdir(config.out):
        shutil.rmtree(config.out)
    torch.manual_seed(config.seed)
    meta = merged_meta(config.data)
    train_rows = [row for directory in config.data for row in load_rows(directory, "train")]
    val_rows = [row for directory in config.data for row in load_rows(directory, "validation")]
    processor = QwenImageTextProcessor.from_pretrained(config.model_name_or_path)
    try:
        answer_ids = answer_token_ids(processor.tokenizer, ANSWER_PAIRS[config.answer_tokens])
    except ValueError as exc:
        raise ValueError(f"--answer_tokens {config.answer_tokens}: {exc}") from None
    auxiliary = config.grounding_weight > 0 or config.relation_weight > 0
    if auxiliary and not all("colour_positions" in row and "gripper" in row for row in train_rows):
        flag = "--grounding_weight" if config.grounding_weight > 0 else "--relation_weight"
        raise ValueError(
            f"{flag} needs datasets whose rows record colour_positions and gripper; {config.data} "
            "have rows without them (build them again with `python -m reward.data`; both methods record them)."
        )
    train_set = FrameDataset(
        train_rows,
        config.target,
        config.progress_weight,
        DEFAULT_PROMPT,
        auxiliary,
        colour_permutation=config.colour_permutation,
        seed=config.seed,
    )
    val_set = FrameDataset(val_rows, config.target, config.progress_weight, DEFAULT_PROMPT)
    weights = train_set.class_weights() if config.class_balance else (1.0, 1.0)
    model, mode, total = prepare_model(config)
    from vla_rl.grounding import GroundingLoss, RelationLoss

    grounding = relation = None
    if config.grounding_weight > 0:
        grounding = GroundingLoss.for_model(model, processor.tokenizer, config.grounding_layer)
    if config.relation_weight > 0:
        relation = RelationLoss.for_model(model, processor.tokenizer)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"[PRM train] {mode} fine-tuning: {trainable:,} of {total:,} parameters trainable; "
        f"{len(train_set)} train / {len(val_set)} validation frames; class weights +{weights[0]:.2f} -{weights[1]:.2f}"
    )
    trainer = make_trainer_class()(
        model=model,
        args=training_arguments(config, mode),
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=FrameCollator(processor, weights),
        compute_metrics=compute_metrics,
        answer_ids=answer_ids,
        grounding=grounding,
        grounding_weight=config.grounding_weight,
        relation=relation,
        relation_weight=config.relation_weight,
    )
    resume = get_last_checkpoint(config.out) if config.resume and os.path.isdir(config.out) else None
    if resume:
        trainer.restore_auxiliary_heads(resume)
    started = time.time()
    before = trainer.evaluate(metric_key_prefix="initial")
    result = trainer.train(resume_from_checkpoint=resume)
    predictions, after = trainer.final_evaluation()
    tuned = tune_threshold(predictions.reshape(-1), val_rows, config.max_score_window)
    probe = list(range(min(8, len(val_set))))
    probe_scores = trainer.predict(torch.utils.data.Subset(val_set, probe)).predictions.reshape(-1)
    extra = prm_config(config, mode, meta, tuned)
    final = write_final(trainer, processor, config.out, extra)
    summary = {
        "config": asdict(config),
        "mode": mode,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_frames": len(train_set),
        "validation_frames": len(val_set),
        "steps": int(result.global_step),
        "resumed_from": resume,
        "seconds": round(time.time() - started, 1),
        "initial": before,
        "final": after,
        "decision_threshold": extra.get("decision_threshold"),
        "decision_threshold_validation_f1": extra.get("decision_threshold_validation_f1"),
        "score_window": extra.get("score_window"),
        "final_checkpoint": final,
        # P(positive) of the first validation frames from the in-memory model: a reloaded
        # final_checkpoint must reproduce these
        "probe": {"rows": [val_rows[i]["image"] for i in probe], "scores": [float(x) for x in probe_scores]},
    }
    with open(os.path.join(config.out, "prm_train_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def parse_args(argv: list[str] | None = None) -> PRMTrainConfig:
    defaults = PRMTrainConfig(data="", model_name_or_path="", out="")
    p = argparse.ArgumentParser(prog="python -m reward.train_prm", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="PRM dataset directory (python -m reward.data), or several to train on together",
    )
    p.add_argument("--model_name_or_path", required=True, help="local Qwen2-VL-family checkpoint to fine-tune")
    p.add_argument("--out", required=True, help="output directory (checkpoint-N/, final_checkpoint/)")
    p.add_argument("--target", default=defaults.target, choices=L.TARGETS, help="what P(positive) is trained towards")
    p.add_argument(
        "--progress_weight",
        type=float,
        default=defaults.progress_weight,
        help="--target progress: target = weight * progress before completion",
    )
    p.add_argument(
        "--finetune",
        default=defaults.finetune,
        choices=["auto", "full", "lora"],
        help="auto: full below 100 M parameters, else LoRA",
    )
    p.add_argument("--lora_r", type=int, default=defaults.lora_r)
    p.add_argument("--lora_alpha", type=int, default=defaults.lora_alpha)
    p.add_argument("--lora_dropout", type=float, default=defaults.lora_dropout)
    p.add_argument("--answer_tokens", default=defaults.answer_tokens, help="yes_no, plus_minus or one_zero")
    p.add_argument("--epochs", type=float, default=defaults.epochs)
    p.add_argument("--max_steps", type=int, default=defaults.max_steps, help="overrides --epochs when > 0")
    p.add_argument("--batch_size", type=int, default=defaults.batch_size)
    p.add_argument("--learning_rate", type=float, default=None, help="default 1e-3 (full) / 1e-4 (LoRA)")
    p.add_argument("--warmup_ratio", type=float, default=defaults.warmup_ratio)
    p.add_argument("--eval_steps", type=int, default=defaults.eval_steps)
    p.add_argument("--save_steps", type=int, default=defaults.save_steps)
    p.add_argument("--save_total_limit", type=int, default=defaults.save_total_limit)
    p.add_argument("--logging_steps", type=int, default=defaults.logging_steps)
    p.add_argument("--class_balance", type=str2bool, default=defaults.class_balance)
    p.add_argument(
        "--grounding_weight",
        type=float,
        default=defaults.grounding_weight,
        help="weight of the grounding loss at the instruction's colour words (vla_rl.grounding; 0: off; "
        "needs a dataset whose rows record colour_positions, as reward.data writes them)",
    )
    p.add_argument("--grounding_layer", type=int, default=defaults.grounding_layer, help="0: the middle layer")
    p.add_argument(
        "--relation_weight",
        type=float,
        default=defaults.relation_weight,
        help="weight of the relation loss at the answer position: how the named object stands to the gripper "
        "and to its destination (vla_rl.grounding.RelationLoss; 0: off; needs colour_positions like "
        "--grounding_weight)",
    )
    p.add_argument(
        "--colour_permutation",
        type=float,
        default=defaults.colour_permutation,
        help="fraction of training frames recoloured by a random permutation of the palette, with the "
        "instruction's colour words renamed alike (reward.augment; labels unchanged; 0: off)",
    )
    p.add_argument(
        "--freeze_vision",
        type=str2bool,
        default=defaults.freeze_vision,
        help="full fine-tuning: keep the vision tower fixed (e.g. one pretrained by vla_rl.vision_pretrain)",
    )
    p.add_argument(
        "--max_score_window",
        type=int,
        default=defaults.max_score_window,
        help="causal score windows 1..N frames are tried with the threshold on the validation episodes; the best "
        "is recorded in prm_config.json (reward.prm_metrics.causal_mean; 1: every frame scored alone)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--resume", type=str2bool, default=False, help="continue from the last checkpoint-N in --out")
    p.add_argument("--overwrite", type=str2bool, nargs="?", const=True, default=False, help="start --out afresh")
    return PRMTrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_args(argv)
        summary = train_prm(config)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    final = summary["final"]
    print(
        f"[PRM train] {summary['steps']} steps in {summary['seconds']} s; validation F1 "
        f"{summary['initial'].get('initial_f1', float('nan')):.3f} -> {final.get('eval_f1', float('nan')):.3f}, "
        f"loss {summary['initial']['initial_loss']:.4f} -> {final['eval_loss']:.4f}; "
        f"wrote {summary['final_checkpoint']}"
    )
    if summary["decision_threshold"] is not None:
        print(
            f"[PRM train] decision threshold {summary['decision_threshold']:.2f} at a score window of "
            f"{summary['score_window']} frame(s) (validation F1 {summary['decision_threshold_validation_f1']:.3f} "
            "there), recorded in prm_config.json"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
