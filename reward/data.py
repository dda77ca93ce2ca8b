"""Build process-reward-model datasets from simulation, labelled by the simulator.

Command line::

    python -m reward.data --method expert --tasks reach push --num_samples 200 --out data/prm/expert
    python -m reward.data --method policy --vla_path assets/models/vla-small --num_samples 50 \\
        --num_rollouts 8 --band 0.3 0.8 --out data/prm/policy

Two generation methods (the PRM recipe of the reference systems):

- ``policy`` (method 1): the current VLA generates ``--num_rollouts`` sampled episodes from each
  initial state; the simulator's privileged success and progress label every frame. A
  difficulty filter keeps initial states whose failure rate lies in ``--band`` (default
  30 %-80 %); ``--num_samples`` initial states are kept per task.
- ``expert`` (method 2): the scripted expert generates ``--num_samples`` episodes per task,
  executed with action noise drawn from ``--noise_levels`` (failures), and for a
  ``--decoy_fraction`` of episodes aimed at another block than the named one (near-misses
  that only the instruction tells apart; with ``--decoy_destinations True`` also the named block
  taken to another pad or tray); a ``--short_stop_fraction`` of episodes stops just short of
  success (within ``--short_stop_margin`` of the task's tolerance) and holds still: near misses
  that look almost completed (reach and push). ``--post_success_frames`` more frames are recorded after success
  while the task stays completed, so that "completed" frames are not only the single terminal
  frame: the arm holds still, or with ``--post_success_motion retreat`` (``mixed``: half the
  episodes) rises and backs away, so that completion cannot be read from where the gripper is
  (except in tasks whose success is the gripper's own relation to the scene: reach).

Frames come from the front camera, or with ``--camera wrist`` from the eye-in-hand camera
(``assets/mjcf/robot.xml``), which sees a pushed block and its pad with 2.7 times the pixels per
centimetre, or with ``--camera front+wrist`` from both side by side; a PRM trained on them
scores that view's frames in training, whatever the policy sees.

The episode generators live in :mod:`reward.generators`.

On-disk format (version 1) — see :mod:`reward.dataset` for the reader::

    meta.json              format_version, method, arguments, tasks, image size and camera of
                           the frames, seeds of each split, episode and frame counts, label schemes
    train.jsonl            one JSON object per frame (fields in reward.dataset.ROW_FIELDS)
    validation.jsonl       same, for the validation episodes
    images/EEEEEE/TTTT.png the frame of episode E at step T (PNG, RGB)

The split is by initial state (all rollouts of one initial state, hence every frame of an
episode, fall in one split). The directory is written under a temporary name and renamed into
place, so an interrupted run never leaves a partial dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from reward import labels as L
from reward.dataset import FORMAT_VERSION, META_FILE, SPLITS, read_meta
from reward.generators import POST_SUCCESS_MOTIONS, GeneratedEpisode, generate_expert, generate_policy
from vla_rl import keys
from vla_rl.atomic import atomic_directory
from vla_rl.cli import str2bool


@dataclass
class DataConfig:
    out: str
    method: str = "expert"
    tasks: list[str] = field(default_factory=lambda: ["reach", "push"])
    num_samples: int = 100
    num_rollouts: int = 8
    vla_path: str | None = None
    temperature: float = 1.0
    band: tuple[float, float] = (0.3, 0.8)
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.6, 1.0])
    decoy_fraction: float = 0.25
    post_success_frames: int = 8
    post_success_motion: str = "hold"
    decoy_destinations: bool = False
    short_stop_fraction: float = 0.0
    short_stop_margin: float = 0.03
    step_frames: int = 5
    max_env_length: int = 0
    image_size: int = 56
    camera: str = keys.FRONT_CAMERA
    val_fraction: float = 0.2
    seed: int = 0
    skip_generation: bool = False
    overwrite: bool = False

    def validate(self) -> None:
        import envs

        for task in self.tasks:
            envs.task_id(task)  # raises naming the task
        checks = [
            (self.method in ("expert", "policy"), f"--method must be 'expert' or 'policy', got {self.method!r}"),
            (self.num_samples >= 1, f"--num_samples must be >= 1, got {self.num_samples}"),
            (self.num_rollouts >= 1, f"--num_rollouts must be >= 1, got {self.num_rollouts}"),
            (
                0 <= self.band[0] <= self.band[1] <= 1,
                f"--band must be LOW HIGH with 0 <= LOW <= HIGH <= 1, got {self.band}",
            ),
            (all(n >= 0 for n in self.noise_levels), f"--noise_levels must be >= 0, got {self.noise_levels}"),
            (0 <= self.decoy_fraction <= 1, f"--decoy_fraction must be in [0, 1], got {self.decoy_fraction}"),
            (self.post_success_frames >= 0, f"--post_success_frames must be >= 0, got {self.post_success_frames}"),
            (
                self.post_success_motion in POST_SUCCESS_MOTIONS,
                f"--post_success_motion must be one of {', '.join(POST_SUCCESS_MOTIONS)}, "
                f"got {self.post_success_motion!r}",
            ),
            (
                0 <= self.short_stop_fraction <= 1,
                f"--short_stop_fraction must be in [0, 1], got {self.short_stop_fraction}",
            ),
            (self.short_stop_margin > 0, f"--short_stop_margin must be > 0 metres, got {self.short_stop_margin}"),
            (self.step_frames >= 1, f"--step_frames must be >= 1, got {self.step_frames}"),
            (self.max_env_length >= 0, f"--max_env_length must be >= 0, got {self.max_env_length}"),
            (16 <= self.image_size <= 256, f"--image_size must be in 16..256, got {self.image_size}"),
            (self.camera in keys.VIEWS, f"--camera must be one of {', '.join(keys.VIEWS)}, got {self.camera!r}"),
            (0 < self.val_fraction < 1, f"--val_fraction must be in (0, 1), got {self.val_fraction}"),
            (self.temperature > 0, f"--temperature must be > 0, got {self.temperature}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message + ".")
        if self.method == "expert" and self.short_stop_fraction > 0:
            unable = [t for t in self.tasks if not hasattr(envs.task_class(t), "goal_distance")]
            if unable:
                raise ValueError(
                    f"--short_stop_fraction needs tasks whose success is a goal distance (reach, push); "
                    f"{', '.join(unable)} has none: leave it out of --tasks or set --short_stop_fraction 0."
                )
        if self.method == "policy":
            if not self.vla_path:
                raise ValueError("--method policy needs --vla_path (the policy that generates the rollouts).")
            from vla_rl.policy.checkpoint import read_policy_config

            read_policy_config(self.vla_path)


# ----------------------------------------------------------------------------- writing
def episode_rows(episode: GeneratedEpisode, index: int, step_frames: int) -> list[dict]:
    import envs

    labels = L.episode_labels(episode.success, episode.progress, episode.states, step_frames)
    success = bool(labels["completion"][-1])
    task = envs.task_id(episode.task)
    max_progress = round(float(np.max(episode.progress)), 4)
    he_tokens, se_tokens, completion_tokens = (
        L.tokens(labels["he"]),
        L.tokens(labels["se"]),
        L.tokens(labels["completion"]),
    )
    rows = []
    for t in range(len(episode.frames)):
        rows.append(
            {
                "episode": index,
                "frame": t,
                "image": f"images/{index:06d}/{t:04d}.png",
                "task": task,
                "instruction": episode.instruction,
                "seed": episode.seed,
                "source": episode.source,
                "episode_success": success,
                "episode_max_progress": max_progress,
                "success": bool(episode.success[t]),
                "progress": round(float(episode.progress[t]), 4),
                "completion": int(labels["completion"][t]),
                "completion_token": completion_tokens[t],
                "milestone": int(labels["milestone"][t]),
                "step": int(labels["step"][t]),
                "he": float(labels["he"][t]),
                "he_token": he_tokens[t],
                "se": round(float(labels["se"][t]), 6),
                "se_token": se_tokens[t],
                "gripper": [round(float(v), 4) for v in episode.states[t, :3]],
                **(
                    {}
                    if episode.colour_positions is None
                    else {"colour_positions": colour_row(episode.colour_positions[t])}
                ),
                **episode.extra,
            }
        )
    return rows


def colour_row(positions: np.ndarray) -> list:
    """``(C, 3)`` positions as JSON: one ``[x, y, z]`` (4 decimals) or ``null`` per palette colour."""
    return [None if np.isnan(p).any() else [round(float(v), 4) for v in p] for p in positions]


def write_episode_images(directory: str, index: int, frames: np.ndarray) -> None:
    from PIL import Image

    folder = os.path.join(directory, "images", f"{index:06d}")
    os.makedirs(folder, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(os.path.join(folder, f"{t:04d}.png"))


def split_seeds(config: DataConfig, task: str, seeds: list[int]) -> set[int]:
    """The validation initial states of one task (a seeded fraction of ``seeds``)."""
    rng = np.random.default_rng([config.seed, 7, len(task)])
    count = max(1, round(config.val_fraction * len(seeds)))
    return set(int(s) for s in rng.permutation(seeds)[:count])


def candidate_seeds(config: DataConfig, task_index: int) -> list[int]:
    """Initial-state seeds of one task: disjoint across tasks and from nearby ``--seed`` values."""
    factor = 20 if config.method == "policy" else 1
    start = config.seed + task_index * 100_000
    return list(range(start, start + factor * config.num_samples))


def generate(config: DataConfig, progress_bar: bool = True) -> dict:
    """Generate (or, with ``skip_generation``, reuse) the dataset; returns its meta."""
    if config.skip_generation:
        if not os.path.isdir(config.out):
            raise FileNotFoundError(
                f"--skip_generation True but {config.out!r} does not exist; drop the flag to build it."
            )
        return read_meta(config.out)
    config.validate()
    from tqdm import tqdm

    policy = None
    if config.method == "policy":
        import torch

        from vla_rl.policy.checkpoint import load_policy

        torch.manual_seed(config.seed)
        policy = load_policy(config.vla_path, "--vla_path")
    started = time.time()
    with atomic_directory(config.out, config.overwrite) as tmp:
        bar = tqdm(
            total=config.num_samples * len(config.tasks),
            desc=f"PRM data ({config.method})",
            unit="state",
            disable=not progress_bar,
        )
        splits = {name: [] for name in SPLITS}
        seeds_of = {name: {} for name in SPLITS}
        index = 0
        for t, task in enumerate(config.tasks):
            seeds = candidate_seeds(config, t)
            if policy is None:
                episodes = generate_expert(config, task, seeds, bar)
            else:
                episodes = generate_policy(config, task, seeds, bar, policy)
            if not episodes:
                raise ValueError(
                    f"{task}: none of {len(seeds)} initial states had a policy failure rate in --band "
                    f"{list(config.band)}; widen --band, raise --num_rollouts or use --method expert."
                )
            used = sorted({e.seed for e in episodes})
            validation = split_seeds(config, task, used)
            for name in SPLITS:
                seeds_of[name][task] = [s for s in used if (s in validation) == (name == "validation")]
            for episode in episodes:
                write_episode_images(tmp, index, episode.frames)
                split = "validation" if episode.seed in validation else "train"
                splits[split].extend(episode_rows(episode, index, config.step_frames))
                index += 1
        bar.close()
        for name, rows in splits.items():
            with open(os.path.join(tmp, f"{name}.jsonl"), "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        meta = dataset_meta(config, splits, seeds_of, index, time.time() - started)
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=1)
    return meta


def dataset_meta(config: DataConfig, splits: dict, seeds_of: dict, episodes: int, seconds: float) -> dict:
    counts = {}
    for name, rows in splits.items():
        episode_success = {r["episode"]: r["episode_success"] for r in rows}
        counts[name] = {
            "episodes": len(episode_success),
            "frames": len(rows),
            "successful_episodes": int(sum(episode_success.values())),
            "completed_frames": int(sum(r["completion"] for r in rows)),
        }
    args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()}
    return {
        "format_version": FORMAT_VERSION,
        "method": config.method,
        "args": args,
        "tasks": list(config.tasks),
        "image_size": config.image_size,
        "camera": config.camera,
        "step_frames": config.step_frames,
        "label_schemes": list(L.SCHEMES),
        "episodes": episodes,
        "splits": counts,
        "seeds": seeds_of,
        "seconds": round(seconds, 1),
    }


def parse_args(argv: list[str] | None = None) -> DataConfig:
    d = DataConfig(out="")  # the defaults
    p = argparse.ArgumentParser(prog="python -m reward.data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="dataset directory (written atomically)")
    p.add_argument("--method", default=d.method, choices=["expert", "policy"], help="who generates the episodes")
    p.add_argument("--tasks", nargs="+", default=d.tasks, help="task names")
    p.add_argument(
        "--num_samples",
        type=int,
        default=d.num_samples,
        help="episodes (expert) / kept initial states (policy) per task",
    )
    p.add_argument("--num_rollouts", type=int, default=d.num_rollouts, help="policy rollouts per initial state")
    p.add_argument("--vla_path", default=None, help="policy checkpoint for --method policy")
    p.add_argument("--temperature", type=float, default=d.temperature, help="policy sampling temperature")
    p.add_argument(
        "--band",
        nargs=2,
        type=float,
        default=list(d.band),
        metavar=("LOW", "HIGH"),
        help="keep initial states whose policy failure rate is in [LOW, HIGH]",
    )
    p.add_argument(
        "--noise_levels",
        nargs="+",
        type=float,
        default=d.noise_levels,
        help="expert action-noise std levels, one drawn per episode",
    )
    p.add_argument(
        "--decoy_fraction", type=float, default=d.decoy_fraction, help="share of expert episodes aimed at another block"
    )
    p.add_argument(
        "--post_success_frames", type=int, default=d.post_success_frames, help="expert frames recorded after success"
    )
    p.add_argument(
        "--post_success_motion",
        default=d.post_success_motion,
        help="the arm after success: hold (still), retreat (rise and back away while the task stays "
        "completed), or mixed (one of the two per episode)",
    )
    p.add_argument(
        "--decoy_destinations",
        type=str2bool,
        default=d.decoy_destinations,
        help="decoy episodes may also take the named block to another pad or tray (push, pick_place)",
    )
    p.add_argument(
        "--short_stop_fraction",
        type=float,
        default=d.short_stop_fraction,
        help="share of expert episodes that stop just short of success and hold still for "
        "--post_success_frames frames: near misses whose last frames look almost completed (reach, push)",
    )
    p.add_argument(
        "--short_stop_margin",
        type=float,
        default=d.short_stop_margin,
        help="metres: a short stop happens once the goal distance is under the task's tolerance plus a "
        "uniform draw from [0, MARGIN]",
    )
    p.add_argument("--step_frames", type=int, default=d.step_frames, help="frames per step for the HE/SE step rewards")
    p.add_argument(
        "--max_env_length", type=int, default=d.max_env_length, help="episode step limit (0: the task's own)"
    )
    p.add_argument("--image_size", type=int, default=d.image_size, help="frame side, pixels")
    p.add_argument(
        "--camera",
        default=d.camera,
        help=f"camera of the frames ({' | '.join(keys.VIEWS)}: the front view | the eye-in-hand view | both side "
        "by side); --method policy runs the policy on its own view and records this camera's beside it",
    )
    p.add_argument(
        "--val_fraction", type=float, default=d.val_fraction, help="share of initial states in the validation split"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="first initial-state seed; also seeds noise and sampling")
    p.add_argument("--skip_generation", type=str2bool, default=False, help="reuse the dataset already at --out")
    p.add_argument(
        "--overwrite", type=str2bool, nargs="?", const=True, default=False, help="replace --out if it exists"
    )
    args = p.parse_args(argv)
    values = vars(args)
    values["band"] = tuple(values["band"])
    return DataConfig(**values)


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_args(argv)
        meta = generate(config)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train, val = meta["splits"]["train"], meta["splits"]["validation"]
    print(
        f"{'reused' if config.skip_generation else 'wrote'} {config.out}: {meta['episodes']} episodes, "
        f"train {train['frames']} frames ({train['successful_episodes']}/{train['episodes']} successful episodes), "
        f"validation {val['frames']} frames ({val['successful_episodes']}/{val['episodes']}), {meta['seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
