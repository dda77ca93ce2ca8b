"""Evaluate a process reward model on a labelled dataset: JSON report + P(completed) plots.

Command line::

    python -m reward.evaluate_prm --prm_model_name_or_path assets/models/prm-small \\
        --data data/prm/heldout --split all --out runs/prm_eval

``--prm_model_name_or_path`` is a Qwen2-VL checkpoint (with ``--prm_checkpoint_path`` for a LoRA
adapter) or a built-in reference: ``oracle`` (privileged success: the upper bound),
``oracle_progress``, ``random``, ``dummy``. The evaluation seeds are printed and checked
against the seeds of the PRM's training set (from its ``prm_config.json``): overlapping seeds
are an error unless ``--allow_seed_overlap True``.

Frames are called completed at ``--threshold``; by default at the decision threshold recorded in
the PRM's ``prm_config.json`` (``reward.train_prm`` tunes it for the best F1 on its validation
split), else 0.5. ``--save_threshold True`` tunes it here instead, on the given frames, together
with the causal score window (1..``--max_score_window``; at ``--score_window`` when given), and
records both in ``prm_config.json``. The frames must be the PRM's own validation episodes, or a
calibration set: episodes of none of its recorded seeds, whose seeds are then recorded with the
threshold (``decision_threshold_seeds``) and refused as evaluation data afterwards like training
seeds — so a threshold is never fitted to the data it is reported on. Scores are averaged over
the causal window recorded with that threshold (``score_window``: each frame with the episode's
frames before it, as the PRM rewards of a rollout are; ``--score_window`` overrides it, 1 scores
every frame alone); the report gives the frame metrics of the unaveraged scores too.

Writes ``prm_eval.json`` (frame and episode metrics, overall and per task, the seeds; the frame
metrics at 0.5 too when the threshold differs) and ``prm_curves.png`` (P(completed) over time for
successful and failed episodes, the true completion frame marked), and ``prm_scores.csv``: one row per
frame (task, seed, episode, frame, completion label, privileged progress, the raw and the
window-averaged P(completed), and whether it is called completed), for analyses of where a PRM errs
without scoring the frames again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from reward.base import BUILTIN_PRMS, builtin_prm
from vla_rl.cli import str2bool


def load_prm(name: str, adapter: str | None, batch_size: int = 64):
    """A built-in reference PRM (``BUILTIN_PRMS``) or a Qwen2-VL checkpoint (+ LoRA adapter)."""
    if name in BUILTIN_PRMS:
        return builtin_prm(name)
    from reward.qwen_prm import QwenProcessRM

    return QwenProcessRM(name, adapter_path=adapter, batch_size=batch_size)


def recorded_seeds(name: str, adapter: str | None, split: str) -> dict:
    """``{task: [seeds]}`` of one split of the PRM's training dataset, from its ``prm_config.json``."""
    from reward.qwen_prm import trained_prm_config

    if name in BUILTIN_PRMS:
        return {}
    return trained_prm_config(adapter, name).get("dataset_seeds", {}).get(split, {})


def decision_threshold(args) -> tuple[float, str]:
    """The threshold to evaluate at and where it comes from."""
    from reward.qwen_prm import trained_prm_config

    if args.threshold is not None:
        return args.threshold, "--threshold"
    if args.prm_model_name_or_path not in BUILTIN_PRMS:
        recorded = trained_prm_config(args.prm_checkpoint_path, args.prm_model_name_or_path).get("decision_threshold")
        if recorded is not None:
            return float(recorded), "prm_config.json"
    return 0.5, "default"


def threshold_seeds(name: str, adapter: str | None) -> dict:
    """``{task: [seeds]}`` of the calibration set the PRM's threshold was tuned on, if any."""
    from reward.qwen_prm import THRESHOLD_SEEDS, trained_prm_config

    if name in BUILTIN_PRMS:
        return {}
    return trained_prm_config(adapter, name).get(THRESHOLD_SEEDS, {})


def check_tunable(args, eval_seeds: dict, trained: dict) -> bool:
    """``--save_threshold`` only on the PRM's own validation episodes, or on a calibration set that
    shares no seed with its training dataset (never half of each); ``trained`` is the evaluation
    seeds' overlap with its training seeds. Returns whether the frames are a calibration set
    (whose seeds are then recorded with the threshold)."""
    if args.prm_model_name_or_path in BUILTIN_PRMS:
        raise ValueError(f"--save_threshold needs a trained PRM, not the built-in {args.prm_model_name_or_path!r}.")
    if args.threshold is not None:
        raise ValueError("--save_threshold tunes the threshold; leave --threshold out.")
    if trained:  # even with --allow_seed_overlap: a threshold is never tuned on what the PRM learned from
        raise ValueError(
            f"--save_threshold: these frames include the PRM's training episodes "
            f"{first_seeds(trained)}; tune on its validation episodes or on a calibration set."
        )
    validation = recorded_seeds(args.prm_model_name_or_path, args.prm_checkpoint_path, "validation")
    outside = seed_overlap(eval_seeds, validation, complement=True)
    if not outside:
        return False  # every frame is a validation episode
    if not seed_overlap(eval_seeds, validation):
        return True  # no frame is, nor a training one
    raise ValueError(
        f"--save_threshold: these frames are partly the PRM's validation episodes and partly not (seeds outside "
        f"them: {first_seeds(outside)}); tune on --data <its training dataset> --split validation, or on a "
        "calibration set built with another --seed (python -m reward.data), and evaluate on held-out data afterwards."
    )


def first_seeds(seeds_by_task: dict, count: int = 5) -> dict:
    """The first ``count`` seeds of each task: enough of a seed list to name in an error."""
    return {task: seeds[:count] for task, seeds in seeds_by_task.items()}


def seed_overlap(eval_seeds: dict, train_seeds: dict, complement: bool = False) -> dict:
    """``{task: sorted common seeds}`` for tasks that share seeds (tasks by env id or name); with
    ``complement``, the evaluation seeds that are *not* among ``train_seeds``."""
    import envs

    train = {envs.task_id(task): set(seeds) for task, seeds in train_seeds.items()}
    overlap = {}
    for task, seeds in eval_seeds.items():
        known = train.get(envs.task_id(task), set())
        common = sorted(set(seeds) - known if complement else set(seeds) & known)
        if common:
            overlap[task] = common
    return overlap


def merge_seeds(*seed_sets: dict) -> dict:
    """The union of ``{task: [seeds]}`` dicts (tasks by env id)."""
    import envs

    merged: dict[str, set] = {}
    for seeds in seed_sets:
        for task, values in seeds.items():
            merged.setdefault(envs.task_id(task), set()).update(values)
    return {task: sorted(values) for task, values in merged.items()}


def score_rows(prm, rows: list[dict], batch_size: int = 256) -> np.ndarray:
    from tqdm import tqdm

    from reward.dataset import load_image
    from vla_rl import keys

    scores = []
    for start in tqdm(range(0, len(rows), batch_size), desc="scoring frames", unit="batch"):
        chunk = rows[start : start + batch_size]
        frames = np.stack([load_image(r["image_path"]) for r in chunk])
        infos = [{keys.SUCCESS: r["success"], keys.PROGRESS: r["progress"]} for r in chunk]
        scores.append(prm.score(frames, [r["instruction"] for r in chunk], infos))
    return np.concatenate(scores)


def episode_records(rows: list[dict], scores: np.ndarray) -> list[dict]:
    from reward.dataset import episode_key

    by_episode: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_episode.setdefault(episode_key(row), []).append(i)
    records = []
    for episode, indices in by_episode.items():
        indices.sort(key=lambda i: rows[i]["frame"])
        first = rows[indices[0]]
        records.append(
            {
                "episode": episode,
                "task": first["task"],
                "source": first["source"],
                "seed": first["seed"],
                "success": bool(first["episode_success"]),
                "max_progress": max(rows[i]["progress"] for i in indices),
                "scores": scores[indices],
                "completion": np.array([rows[i]["completion"] for i in indices]),
            }
        )
    return records


def metrics_of(rows, scores, threshold: float, near_miss: float) -> dict:
    from reward.prm_metrics import episode_metrics, frame_metrics

    labels = np.array([r["completion"] for r in rows], bool)
    return {
        "frame": frame_metrics(scores, labels, threshold),
        "episode": episode_metrics(episode_records(rows, scores), threshold, near_miss),
    }


def plot_curves(records: list[dict], path: str, per_kind: int = 4, threshold: float = 0.5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [("successful", [r for r in records if r["success"]]), ("failed", [r for r in records if not r["success"]])]
    fig, axes = plt.subplots(2, per_kind, figsize=(3.2 * per_kind, 5.6), sharey=True, squeeze=False)
    for row, (kind, chosen) in enumerate(kinds):
        for col in range(per_kind):
            ax = axes[row][col]
            if col >= len(chosen):
                ax.axis("off")
                continue
            record = chosen[col * max(1, len(chosen) // per_kind)]
            ax.plot(record["scores"], color="tab:blue", label="P(completed)")
            ax.axhline(threshold, color="grey", lw=0.6, ls=":")
            hits = np.flatnonzero(record["completion"])
            if len(hits):
                ax.axvline(hits[0], color="tab:green", ls="--", label="true completion")
            ax.set_title(f"{kind}: {record['task'].split('/')[-1]} seed {record['seed']}", fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("frame", fontsize=8)
            if col == 0:
                ax.set_ylabel("P(completed)")
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def check_camera(args) -> None:
    """``ValueError`` if the dataset's frames come from another camera than the PRM's training frames."""
    from reward.dataset import read_meta
    from reward.qwen_prm import trained_prm_config
    from vla_rl import keys

    data = read_meta(args.data).get("camera", keys.FRONT_CAMERA)
    trained = trained_prm_config(args.prm_checkpoint_path, args.prm_model_name_or_path).get("camera")
    if trained and trained != data:
        raise ValueError(
            f"--data {args.data} holds {data}-camera frames and this PRM was trained on {trained}-camera "
            f"frames; build the dataset with --camera {trained} (python -m reward.data)."
        )


def evaluate(args) -> dict:
    from reward.dataset import SPLITS, episode_key, load_rows
    from reward.prm_metrics import frame_metrics, windowed

    splits = SPLITS if args.split == "all" else (args.split,)
    rows = [row for split in splits for row in load_rows(args.data, split)]
    eval_seeds: dict[str, list[int]] = {}
    for row in rows:
        eval_seeds.setdefault(row["task"], set()).add(row["seed"])
    eval_seeds = {task: sorted(seeds) for task, seeds in eval_seeds.items()}
    train_seeds = recorded_seeds(args.prm_model_name_or_path, args.prm_checkpoint_path, "train")
    overlap = seed_overlap(eval_seeds, train_seeds)
    if overlap and not args.allow_seed_overlap:
        raise ValueError(
            f"evaluation seeds overlap the PRM's training seeds {first_seeds(overlap)}; build "
            "a held-out dataset with another --seed (python -m reward.data) or pass --allow_seed_overlap True."
        )
    calibration = check_tunable(args, eval_seeds, overlap) if args.save_threshold else False
    calibrated = threshold_seeds(args.prm_model_name_or_path, args.prm_checkpoint_path)
    reused = {} if args.save_threshold else seed_overlap(eval_seeds, calibrated)
    if reused and not args.allow_seed_overlap:
        raise ValueError(
            f"evaluation seeds are episodes the PRM's decision threshold was tuned on "
            f"{first_seeds(reused)}; evaluate on a held-out dataset with another --seed "
            "(python -m reward.data) or pass --allow_seed_overlap True."
        )
    overlap = merge_seeds(overlap, reused)
    check_camera(args)
    threshold, source = decision_threshold(args)
    prm = load_prm(args.prm_model_name_or_path, args.prm_checkpoint_path, args.batch_size)
    started = time.time()
    raw = score_rows(prm, rows, args.batch_size)
    seconds = time.time() - started
    labels = np.array([r["completion"] for r in rows], bool)
    episodes, frames = [episode_key(r) for r in rows], [r["frame"] for r in rows]
    window = args.score_window or prm.score_window
    if args.save_threshold:
        from reward.prm_metrics import best_window_threshold
        from reward.qwen_prm import record_decision_threshold

        windows = (args.score_window,) if args.score_window else tuple(range(1, args.max_score_window + 1))
        window, threshold, f1 = best_window_threshold(raw, labels, episodes, frames, windows)
        directory = args.prm_checkpoint_path or args.prm_model_name_or_path
        tuned_on = f"{args.split} split of {args.data}" + (" (a calibration set)" if calibration else "")
        path = record_decision_threshold(
            directory, threshold, f1, tuned_on, window, seeds=eval_seeds if calibration else {}
        )
        source = f"tuned here, recorded in {path}"
    scores = windowed(raw, episodes, frames, window)
    report = {
        "prm": args.prm_model_name_or_path,
        "adapter": args.prm_checkpoint_path,
        "data": args.data,  # as given, like "prm": a shipped report names no build machine path
        "split": args.split,
        "evaluation_seeds": eval_seeds,
        "training_seeds": train_seeds,
        "seed_overlap": overlap,
        "frames_per_second": round(len(rows) / max(seconds, 1e-9), 1),
        "threshold": threshold,
        "threshold_source": source,
        "score_window": window,
        "score_window_source": "--score_window"
        if args.score_window
        else "tuned here with the threshold"
        if args.save_threshold
        else "the PRM's prm_config.json (1 if none)",
        **metrics_of(rows, scores, threshold, args.near_miss_progress),
        "per_task": {},
    }
    if threshold != 0.5:
        report["frame_at_0.5"] = frame_metrics(scores, labels, 0.5)
    if window > 1:
        report["frame_unwindowed"] = frame_metrics(raw, labels, threshold)
    for task in eval_seeds:
        chosen = [i for i, r in enumerate(rows) if r["task"] == task]
        report["per_task"][task] = metrics_of(
            [rows[i] for i in chosen], scores[chosen], threshold, args.near_miss_progress
        )
    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, "prm_eval.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, default=float)
    os.replace(tmp, os.path.join(args.out, "prm_eval.json"))
    write_scores(rows, raw, scores, threshold, os.path.join(args.out, "prm_scores.csv"))
    plot_curves(episode_records(rows, scores), os.path.join(args.out, "prm_curves.png"), threshold=threshold)
    return report


SCORE_COLUMNS = ("task", "seed", "episode", "frame", "completion", "progress", "score", "windowed_score", "called")


def write_scores(rows: list[dict], raw: np.ndarray, scores: np.ndarray, threshold: float, path: str) -> None:
    """One CSV row per frame (``SCORE_COLUMNS``), written atomically."""
    import csv

    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SCORE_COLUMNS)
        for row, score, windowed_score in zip(rows, raw, scores, strict=True):
            writer.writerow(
                (
                    row["task"],
                    row["seed"],
                    row["episode"],
                    row["frame"],
                    int(row["completion"]),
                    f"{row['progress']:.4f}",
                    f"{score:.5f}",
                    f"{windowed_score:.5f}",
                    int(windowed_score >= threshold),
                )
            )
    os.replace(tmp, path)


def describe_seeds(seeds: dict) -> str:
    """``task: N seeds in [lo, hi]`` per task (the full lists are in the JSON report)."""
    return "; ".join(f"{task}: {len(v)} seeds in [{min(v)}, {max(v)}]" for task, v in seeds.items() if v)


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m reward.evaluate_prm", description=__doc__.split("\n\n")[0])
    p.add_argument("--prm_model_name_or_path", required=True, help=f"Qwen2-VL checkpoint or one of {BUILTIN_PRMS}")
    p.add_argument("--prm_checkpoint_path", default=None, help="LoRA adapter directory (reward.train_prm)")
    p.add_argument("--data", required=True, help="PRM dataset directory (python -m reward.data)")
    p.add_argument("--split", default="validation", choices=["train", "validation", "all"])
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="P(completed) at or above which a frame is positive (default: the PRM's recorded decision threshold, "
        "else 0.5)",
    )
    p.add_argument(
        "--save_threshold",
        type=str2bool,
        default=False,
        help="tune the threshold (and score window) for the best F1 on these frames and record them in its "
        "prm_config.json: the PRM's validation episodes, or a calibration set of none of its seeds (recorded with "
        "it, and refused as evaluation data afterwards)",
    )
    p.add_argument(
        "--max_score_window",
        type=int,
        default=4,
        help="--save_threshold without --score_window: the causal score windows 1..N tried with the threshold",
    )
    p.add_argument(
        "--near_miss_progress", type=float, default=0.5, help="failed episodes with this progress are near misses"
    )
    p.add_argument(
        "--score_window",
        type=int,
        default=0,
        help="average each frame's score with its episode's previous ones over this many frames (0: the PRM's "
        "recorded score_window, else 1)",
    )
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--allow_seed_overlap", type=str2bool, default=False)
    args = p.parse_args(argv)
    if args.threshold is not None and not 0 < args.threshold < 1:
        p.error(f"--threshold must be in (0, 1), got {args.threshold}")
    if args.batch_size < 1:
        p.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if not 0 <= args.score_window <= 64:
        p.error(f"--score_window must be 0 (the PRM's own) or 1..64, got {args.score_window}")
    if not 1 <= args.max_score_window <= 16:
        p.error(f"--max_score_window must be in 1..16, got {args.max_score_window}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = evaluate(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    frame, episode = report["frame"], report["episode"]
    print(f"evaluation seeds: {describe_seeds(report['evaluation_seeds'])}")
    print(f"training seeds:   {describe_seeds(report['training_seeds']) or 'unknown (no prm_config.json)'}")
    print(
        f"threshold {report['threshold']:.2f} ({report['threshold_source']}); score window {report['score_window']} "
        f"frame(s)"
        + (f" (unaveraged: F1 {report['frame_unwindowed']['f1']:.3f})" if "frame_unwindowed" in report else "")
    )
    print(
        f"frames {frame['frames']} ({frame['positives']} completed): F1 {frame['f1']:.3f} (P {frame['precision']:.3f} "
        f"R {frame['recall']:.3f}), balanced hmean {frame['balanced_hmean']:.3f}, ECE {frame['ece']:.3f}, "
        f"Brier {frame['brier']:.3f}"
    )
    print(
        f"episodes {episode['episodes']}: value-order correlation {episode['value_order_correlation']:.3f}, "
        f"earliest-completion error {episode['earliest_completion_error_frames']:.2f} frames, flicker "
        f"{episode['flicker_rate']:.3f}/episode, near-miss FP {episode['near_miss_false_positive_rate']:.3f} "
        f"({episode['near_miss_failures']} near misses)"
    )
    print(f"wrote {os.path.join(args.out, 'prm_eval.json')}, prm_scores.csv and prm_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
