"""Closed-loop evaluation: success rate per task over a range of held-out seeds, with videos.

Command line::

    python -m vla_rl.evaluate --vla_path assets/models/vla-small --task_ids reach push \\
        --episodes 50 --video_dir runs/eval/videos

Seeds ``seed_base .. seed_base + episodes - 1`` are used for every task; the default base
(1,000,000) is far from the seeds that demonstrations (0 ..) and training rollouts use. Each
task's success rate comes with its 95 % Wilson interval: over 200 seeds a rate near 0.3 is known
to about +-6.5 points, so two evaluations that differ by less are within sampling noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from vla_rl import keys, seed_ranges
from vla_rl.policy.action_tokenizer import GREEDY_DECODINGS


def make_task_vector_env(
    task: str,
    num_envs: int,
    image_size: int,
    max_env_length: int | None = None,
    prm_image_size: int | None = None,
    prm_camera: str | None = None,
    camera: str | None = None,
):
    """A synchronous vector env of one task seen from ``camera`` (rendering in this process keeps
    the 2-core CPU machine's cores for the policy; workers buy little when the policy
    dominates); with ``prm_image_size`` or ``prm_camera``, it also renders the PRM's frames at
    that side or from that camera."""
    import gymnasium as gym

    import envs
    from vla_rl.rollout import env_options

    options = env_options(image_size, max_env_length, prm_image_size, prm_camera, camera)
    return gym.make_vec(envs.task_id(task), num_envs, vectorization_mode="sync", **options)


def success_interval(successes: int, episodes: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate of ``successes`` in ``episodes`` (scipy's)."""
    from scipy.stats import binomtest

    interval = binomtest(int(successes), int(episodes)).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def run_episodes(
    policy,
    task: str,
    seeds: list[int],
    image_size: int,
    num_envs: int = 8,
    greedy: bool = True,
    temperature: float = 1.0,
    max_env_length: int | None = None,
    keep_frames: int = 0,
    on_episode=None,
    greedy_decoding: str = "mean",
    prm_image_size: int | None = None,
    prm_camera: str | None = None,
) -> list[dict]:
    """Run one episode per seed; returns per-episode ``success``, ``final_progress`` (the
    simulator's privileged progress at the last step), ``length``, ``seed``, ``instruction``
    and, for the first ``keep_frames`` episodes, ``frames`` / ``states`` / ``actions`` /
    ``infos`` (success and progress of every frame), ``prm_frames`` where the env renders the
    PRM's frames (at ``prm_image_size``, from ``prm_camera``), and, in tasks with coloured objects,
    ``colour_positions`` (each palette colour's position per frame, NaN: absent) for videos
    and PRM datasets."""
    from envs.demos import colour_positions

    def colours_of(i: int):
        coloured = getattr(env.envs[i].unwrapped, "coloured_objects", None)
        return None if coloured is None else colour_positions(coloured())

    results: list[dict] = []
    count = min(num_envs, len(seeds))
    env = make_task_vector_env(task, count, image_size, max_env_length, prm_image_size, prm_camera, policy.camera)
    prm_frames = keys.PRM_IMAGE in env.single_observation_space.spaces
    try:
        for start in range(0, len(seeds), env.num_envs):
            batch = seeds[start : start + env.num_envs]
            n = len(batch)
            observations, infos = env.reset(seed=batch + [batch[-1] + 10**7 + i for i in range(env.num_envs - n)])
            instructions = list(infos[keys.INSTRUCTION])
            done = np.zeros(env.num_envs, bool)
            done[n:] = True
            records = [
                {"seed": s, "instruction": instructions[i], "success": False, "length": 0} for i, s in enumerate(batch)
            ]
            keep = [start + i < keep_frames for i in range(n)]
            for i in range(n):
                if keep[i]:
                    first = {keys.SUCCESS: bool(infos[keys.SUCCESS][i]), keys.PROGRESS: float(infos[keys.PROGRESS][i])}
                    records[i].update(
                        frames=[observations[keys.IMAGE][i].copy()],
                        states=[observations[keys.STATE][i].copy()],
                        actions=[],
                        infos=[first],
                    )
                    if prm_frames:
                        records[i]["prm_frames"] = [observations[keys.PRM_IMAGE][i].copy()]
                    colours = colours_of(i)
                    if colours is not None:
                        records[i]["colour_positions"] = [colours]
            while not done.all():
                out = policy.act(
                    observations[keys.IMAGE],
                    instructions,
                    observations.get(keys.STATE),
                    temperature=temperature,
                    greedy=greedy,
                    greedy_decoding=greedy_decoding,
                )
                actions = np.clip(out["actions"], -1.0, 1.0).astype(np.float32)
                observations, _, terminated, truncated, infos = env.step(actions)
                for i in range(n):
                    if done[i]:
                        continue
                    record = records[i]
                    record["length"] += 1
                    success = bool(infos[keys.SUCCESS][i])
                    if keep[i]:
                        record["frames"].append(observations[keys.IMAGE][i].copy())
                        record["states"].append(observations[keys.STATE][i].copy())
                        record["actions"].append(actions[i])
                        record["infos"].append({keys.SUCCESS: success, keys.PROGRESS: float(infos[keys.PROGRESS][i])})
                        if prm_frames:
                            record["prm_frames"].append(observations[keys.PRM_IMAGE][i].copy())
                        if "colour_positions" in record:
                            record["colour_positions"].append(colours_of(i))
                    if terminated[i] or truncated[i]:
                        record["success"] = success
                        record["final_progress"] = float(infos[keys.PROGRESS][i])
                        done[i] = True
                        if on_episode is not None:
                            on_episode(record)
            results.extend(records)
    finally:
        env.close()
    return results


def write_videos(
    records: list[dict], task: str, folder: str, prm=None, fps: int = 10, inset: bool = False
) -> list[str]:
    """Annotated mp4s of the records that kept frames; PRM scores when ``prm`` is given (of the
    PRM's own frames where the records have them, shown beside the view with ``inset``: they come from
    another camera)."""
    from reward.prm_metrics import causal_mean
    from reward.video import video_name, write_episode_video

    paths = []
    threshold = prm.threshold if prm is not None else 0.5
    for index, record in enumerate(r for r in records if "frames" in r):
        frames = np.stack(record["frames"])
        scored = np.stack(record["prm_frames"]) if "prm_frames" in record else frames
        scores = None
        if prm is not None:
            scores = causal_mean(prm.score(scored, [record["instruction"]] * len(frames)), prm.score_window)
        steps, total = [], 0.0
        for t in range(len(frames)):
            success = bool(record["infos"][t].get("success", False))
            reward = 1.0 if success and t == len(frames) - 1 else 0.0
            total += reward
            steps.append(
                {
                    "t": t,
                    "action": record["actions"][t - 1] if t else None,
                    "env_reward": reward,
                    "score": None if scores is None else float(scores[t]),
                    "return": total,
                    "success": success,
                }
            )
        path = os.path.join(folder, video_name(index, task, record["success"]))
        insets = scored if prm is not None and inset and "prm_frames" in record else None
        paths.append(write_episode_video(path, frames, steps, record["instruction"], fps, threshold, insets))
    return paths


def evaluate_policy(
    policy,
    tasks: list[str],
    episodes: int,
    image_size: int,
    seed_base: int = seed_ranges.EVALUATION,
    num_envs: int = 8,
    greedy: bool = True,
    temperature: float = 1.0,
    max_env_length: int | None = None,
    video_dir: str | None = None,
    videos_per_task: int = 2,
    prm=None,
    progress: bool = True,
    greedy_decoding: str = "mean",
    prm_image_size: int | None = None,
    sampling_seed: int = 0,
    prm_camera: str | None = None,
) -> dict:
    """Success rate per task over ``episodes`` seeds each (``seed_base ..``); a summary dict.
    ``greedy`` decodes deterministically (``greedy_decoding``: see :meth:`VLAPolicy.act`);
    otherwise each task's actions are sampled from torch's generator seeded with
    ``sampling_seed`` (the caller's random state is left as it was), so a sampled evaluation
    repeats on one machine and a task's figure does not depend on which tasks came before it.
    The video frames ``prm`` scores are rendered at ``prm_image_size`` and from ``prm_camera``
    where those are set."""
    import torch
    from tqdm import tqdm

    seeds = list(range(seed_base, seed_base + episodes))
    summary: dict = {"seeds": [seeds[0], seeds[-1]], "greedy": greedy, "tasks": {}}
    if greedy:
        summary["greedy_decoding"] = greedy_decoding
    else:
        summary["temperature"], summary["sampling_seed"] = temperature, sampling_seed
    bar = tqdm(total=episodes * len(tasks), desc="eval", unit="ep", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for task in tasks:
            successes = []

            def count(record, successes=successes, task=task):
                successes.append(record["success"])
                bar.update(1)
                bar.set_postfix(task=task, success=f"{np.mean(successes):.2f}")

            keep = videos_per_task if video_dir else 0
            with torch.random.fork_rng():
                torch.manual_seed(sampling_seed)
                records = run_episodes(
                    policy,
                    task,
                    seeds,
                    image_size,
                    num_envs,
                    greedy,
                    temperature,
                    max_env_length,
                    keep_frames=keep,
                    on_episode=count,
                    greedy_decoding=greedy_decoding,
                    prm_image_size=prm_image_size if prm is not None and video_dir else None,
                    prm_camera=prm_camera if prm is not None and video_dir else None,
                )
            inset = prm_camera not in (None, policy.camera)  # the PRM's frames come from another camera
            videos = write_videos(records, task, os.path.join(video_dir, task), prm, inset=inset) if video_dir else []
            succeeded = sum(bool(r["success"]) for r in records)
            summary["tasks"][task] = {
                "success_rate": succeeded / len(records),
                "success_ci95": success_interval(succeeded, len(records)),
                "episodes": len(records),
                "mean_length": float(np.mean([r["length"] for r in records])),
                "mean_final_progress": float(np.mean([r["final_progress"] for r in records])),
                "videos": videos,
            }
    finally:
        bar.close()
    summary["seconds"] = time.perf_counter() - start
    summary["mean_success_rate"] = float(np.mean([t["success_rate"] for t in summary["tasks"].values()]))
    return summary


def evaluate_run(policy, config, tasks, image_size, run_dir, prm=None, prm_image_size=None, prm_camera=None) -> dict:
    """A training run's final evaluation: ``--eval_episodes`` held-out seeds per task at
    ``--eval_temperature`` (0: deterministic), videos under ``run_dir/eval/videos``; printed."""
    policy.model.eval()
    print(f"final evaluation: {config.run.eval_episodes} held-out seeds per task", flush=True)
    result = evaluate_policy(
        policy,
        tasks,
        config.run.eval_episodes,
        image_size,
        num_envs=config.env.num_envs,
        greedy=config.run.eval_temperature == 0,
        temperature=config.run.eval_temperature or 1.0,
        max_env_length=config.env.max_env_length or None,
        video_dir=os.path.join(run_dir, "eval", "videos") if config.run.eval_videos else None,
        videos_per_task=config.run.eval_videos,
        prm=prm,
        progress=config.run.progress,
        prm_image_size=prm_image_size,
        sampling_seed=config.run.seed,
        prm_camera=prm_camera,
    )
    print_summary(result, prefix="eval ")
    return result


def print_summary(summary: dict, prefix: str = "") -> None:
    """One line per task of an ``evaluate_policy`` summary."""
    for task, row in summary["tasks"].items():
        print(
            f"{prefix}{task:>12}: success {row['success_rate']:.3f} over {row['episodes']} seeds, "
            f"95 % CI {row['success_ci95'][0]:.3f}-{row['success_ci95'][1]:.3f} "
            f"(mean length {row['mean_length']:.1f}, final progress {row['mean_final_progress']:.3f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla_rl.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--vla_path",
        required=True,
        help="policy checkpoint, training checkpoint (iter_N/) or run directory (its latest)",
    )
    parser.add_argument("--task_ids", nargs="+", default=None, help="tasks (default: the policy's training tasks)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes (seeds) per task")
    parser.add_argument("--seed_base", type=int, default=seed_ranges.EVALUATION, help="first evaluation seed")
    parser.add_argument("--image_size", type=int, default=None, help="frame side (default: the policy's)")
    parser.add_argument("--num_envs", type=int, default=8, help="envs stepped together")
    parser.add_argument("--sample", action="store_true", help="sample actions (default: decode them deterministically)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    parser.add_argument(
        "--sampling_seed",
        type=int,
        default=0,
        help="with --sample: seeds the action sampling, so the same command repeats its figures on one machine",
    )
    parser.add_argument(
        "--greedy_decoding",
        choices=GREEDY_DECODINGS,
        default="mean",
        help="without --sample: each action token is the bin nearest its expected bin (mean) or its most likely bin",
    )
    parser.add_argument("--video_dir", default=None, help="write annotated videos here")
    parser.add_argument("--videos_per_task", type=int, default=2)
    parser.add_argument("--prm_model_name_or_path", default=None, help="score video frames with this PRM")
    parser.add_argument("--out", default=None, help="write the summary JSON here")
    args = parser.parse_args(argv)
    import envs
    from vla_rl.checkpointing import resolve_policy_path
    from vla_rl.policy.checkpoint import load_policy, read_policy_config

    args.vla_path = resolve_policy_path(args.vla_path)
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {args.episodes}.")
        tasks = args.task_ids or read_policy_config(args.vla_path).get("tasks") or ["reach"]
        for task in tasks:
            envs.task_id(task)
        policy = load_policy(args.vla_path, max_batch=args.num_envs)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    image_size = args.image_size or policy.image_size or 56
    prm, prm_image_size, prm_camera = None, None, None
    if args.prm_model_name_or_path:
        from reward.qwen_prm import QwenProcessRM

        prm = QwenProcessRM(args.prm_model_name_or_path)
        prm_image_size, prm_camera = prm.image_size, prm.camera
    summary = evaluate_policy(
        policy,
        tasks,
        args.episodes,
        image_size,
        args.seed_base,
        args.num_envs,
        greedy=not args.sample,
        temperature=args.temperature,
        video_dir=args.video_dir,
        videos_per_task=args.videos_per_task,
        prm=prm,
        greedy_decoding=args.greedy_decoding,
        prm_image_size=prm_image_size,
        sampling_seed=args.sampling_seed,
        prm_camera=prm_camera,
    )
    print_summary(summary)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
