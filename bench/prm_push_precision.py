"""How precisely must a PRM locate the block to reach the push F1 target, and how precisely does it?

Usage::

    .venv/bin/python bench/prm_push_precision.py --data data/default_models/prm-heldout \
        [--run data/default_models/prm-run] [--out results.json]

Push succeeds when the named block's centre is within 3 cm of the named pad's centre (the pad
has a 5 cm radius), so "is the task completed?" on a push frame is a question about one
distance. From the dataset's privileged positions (``colour_positions``; the instruction's first
colour word names the block, the second the pad) this prints:

* the frame-level F1 of a classifier that reads the true block-to-pad distance plus Gaussian
  noise of a given size and cuts it at the best threshold — the ceiling for a PRM whose
  estimate of that distance is that precise; the anchor is the noise-free classifier (F1 below
  1 only where a frame's label and its recorded positions disagree);
* with ``--run`` (a ``reward.train_prm`` output trained with ``--relation_weight`` > 0): the
  error of the PRM's own estimate of that distance — the relation head, read at the answer
  position of its last ``checkpoint-N`` — and the F1 of cutting that estimate, beside the
  ceiling at the same noise.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

NOISE_CM = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
PUSH = "VLARL/Push-v0"


CUTS_M = np.round(np.arange(0.0025, 0.1001, 0.0025), 4)  # candidate "completed below this distance" cuts


def best_f1(estimate: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(F1, cut)``: the best frame F1 of calling a frame completed when ``estimate < cut`` (m)."""
    from reward.prm_metrics import best_f1_threshold

    threshold, f1 = best_f1_threshold(-np.asarray(estimate), labels, grid=-CUTS_M)
    return f1, -threshold


def push_frames(data: str) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Push rows of every split, their xy block-to-pad distances (m) and completion labels."""
    from envs.scene import COLOUR_NAMES
    from reward.augment import colour_words
    from reward.dataset import load_rows

    rows = [r for split in ("train", "validation") for r in load_rows(data, split) if r["task"] == PUSH]
    if not rows:
        raise SystemExit(f"error: --data {data} holds no {PUSH} frames; pass a dataset recorded with push.")
    distances = []
    for row in rows:
        named = colour_words(row["instruction"])
        if len(named) < 2 or "colour_positions" not in row:
            raise SystemExit(
                f"error: --data {data}: row of episode {row['episode']} has no block and pad colour in its "
                "instruction, or no colour_positions; rebuild it with `python -m reward.data`."
            )
        block, pad = (np.asarray(row["colour_positions"][COLOUR_NAMES.index(w)], float) for w in named[:2])
        distances.append(np.linalg.norm(block[:2] - pad[:2]))
    return rows, np.asarray(distances), np.array([row["completion"] for row in rows])


def relation_distances(run: str, rows: list[dict], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The PRM's relation-head estimate of the 3-D block-to-pad distance and the true one (m)."""
    import torch
    from safetensors.torch import load_file
    from transformers.trainer_utils import get_last_checkpoint

    from reward.prm_trainer import RELATION_HEAD_FILE, FrameCollator, FrameDataset
    from reward.qwen_prm import DEFAULT_PROMPT
    from vla_rl.grounding import RELATION_SCALE, RelationLoss, relation_targets
    from vla_rl.qwen.loading import load_model
    from vla_rl.qwen.processor import QwenImageTextProcessor

    final = os.path.join(run, "final_checkpoint")
    last = get_last_checkpoint(run) if os.path.isdir(run) else None  # the checkpoint-N of the largest N
    head = os.path.join(last, RELATION_HEAD_FILE) if last else ""
    if not os.path.isfile(head) or not os.path.isdir(final):
        raise SystemExit(
            f"error: --run {run} needs final_checkpoint/ and a checkpoint-N/{RELATION_HEAD_FILE} (a reward.train_prm "
            "run with --relation_weight > 0 and --save_steps dividing --max_steps)."
        )

    saved, trained = (load_file(os.path.join(path, "model.safetensors")) for path in (last, final))
    if saved.keys() != trained.keys() or not all(torch.equal(saved[k], trained[k]) for k in saved):
        raise SystemExit(f"error: --run {run}: {last} is not the final model; its relation head would not match.")
    processor = QwenImageTextProcessor.from_pretrained(final)
    model = load_model(final, "--run", device="cpu", dtype="float32")
    relation = RelationLoss.for_model(model, processor.tokenizer)
    relation.load_state_dict(torch.load(head, map_location="cpu", weights_only=True))  # as the trainer resumes it
    dataset = FrameDataset(rows, "completion", 0.0, DEFAULT_PROMPT, grounding=True)
    collate = FrameCollator(processor, (1.0, 1.0))
    predicted, true = [], []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            positions, grippers = batch.pop("colour_positions"), batch.pop("grippers")
            for key in ("targets", "weights"):
                batch.pop(key)
            hidden = model(**batch, output_hidden_states=True).hidden_states[relation.layer][:, -1].float()
            named = relation.named(batch["input_ids"])
            index = torch.arange(len(named))
            targets = relation_targets(positions[index, named[:, 0]], positions[index, named[:, 1]], grippers[:, :3])
            predicted.append(relation.head(hidden)[:, 7])  # the compressed block-to-destination distance
            true.append(targets[:, 7])
    decode = lambda z: (RELATION_SCALE * torch.expm1(torch.cat(z).clamp(min=0))).numpy()  # noqa: E731
    return decode(predicted), decode(true)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a reward.data dataset with push frames (held-out seeds)")
    parser.add_argument("--run", help="a reward.train_prm output directory trained with --relation_weight > 0")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated noise")
    parser.add_argument("--repeats", type=int, default=50, help="noise draws averaged per level")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data):
        parser.error(f"--data {args.data} is not a directory")
    rows, distance, labels = push_frames(args.data)
    rng = np.random.default_rng(args.seed)
    print(f"{len(rows)} push frames, {int(labels.sum())} completed ({args.data})")
    anchor = best_f1(distance, labels)[0]
    results = {"frames": len(rows), "completed": int(labels.sum()), "ceiling": {}}
    print("| distance error (sd, cm) | best F1 | vs noise-free |\n|---|---|---|")
    for sd in NOISE_CM:
        draws = [np.abs(distance + rng.normal(0, sd / 100, len(distance))) for _ in range(args.repeats if sd else 0)]
        f1 = float(np.mean([best_f1(noisy, labels)[0] for noisy in draws])) if sd else anchor
        results["ceiling"][str(sd)] = f1
        print(f"| {sd:g} | {f1:.3f} | {f1 / anchor:.2f}x |")
    if args.run:
        predicted, true = relation_distances(args.run, rows)
        error = np.abs(predicted - true)
        near = true < 0.08
        f1, cut = best_f1(predicted, labels)
        results["relation_head"] = {
            "median_error_cm": float(100 * np.median(error)),
            "median_error_near_pad_cm": float(100 * np.median(error[near])),
            "rms_error_near_pad_cm": float(100 * np.sqrt(np.mean(error[near] ** 2))),
            "f1": f1,
            "cut_cm": 100 * cut,
        }
        print(
            f"relation head of {args.run}: |error| median {100 * np.median(error):.2f} cm "
            f"({100 * np.median(error[near]):.2f} cm, RMS {results['relation_head']['rms_error_near_pad_cm']:.2f} cm "
            f"within 8 cm of the pad); F1 of 'estimate < {100 * cut:.1f} cm' {f1:.3f} ({f1 / anchor:.2f}x noise-free)"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
