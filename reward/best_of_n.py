"""Best-of-N with a process reward model: from one initial state, run N rollouts and let the PRM
pick one; report success vs N for PRM, random and oracle selection.

Command line::

    python -m reward.best_of_n --prm_model_name_or_path assets/models/prm-small \\
        --policy expert --decoy_fraction 0.5 --num_states 20 --n 1 2 4 8 --out runs/best_of_n
    python -m reward.best_of_n --prm_model_name_or_path assets/models/prm-small \\
        --policy assets/models/vla-small --temperature 1.0 --num_states 20 --out runs/best_of_n_vla

Each initial state is restored by resetting the task with the same seed (the scene, the robot
and the instruction are then identical; checked on the first frame of every rollout). The
policy is a VLA checkpoint (sampled at ``--temperature``) or ``expert``: the scripted expert
with action noise, aimed at another block than the named one in a ``--decoy_fraction`` of
rollouts (failures that only the instruction tells apart). Selection: ``prm`` picks the rollout
with the highest PRM score of its last frame (``--select final``) or mean over frames
(``--select mean``); ``random`` is the expected success of a uniform pick (the mean over the
N rollouts); ``oracle`` succeeds if any of the N does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from reward.base import BUILTIN_PRMS
from reward.evaluate_prm import load_prm
from vla_rl import seed_ranges


def expert_rollouts(
    task: str, seed: int, count: int, image_size: int, noise: float, decoy: float, rng, camera: str | None = None
) -> list[dict]:
    import gymnasium as gym

    import envs
    from envs.experts import make_expert
    from reward.generators import expert_episode

    env = gym.make(envs.task_id(task), image_size=image_size, camera=camera)
    try:
        rollouts = []
        for _ in range(count):
            expert = make_expert(env, action_noise=noise, seed=int(rng.integers(2**31)))
            episode = expert_episode(env, expert, seed, rng, decoy, post_success=0)
            success = bool(episode.success[-1])
            rollouts.append({"frames": episode.frames, "instruction": episode.instruction, "success": success})
        return rollouts
    finally:
        env.close()


def policy_rollouts(
    policy, task: str, seed: int, count: int, image_size: int, temperature: float, camera: str | None = None
) -> list[dict]:
    """``count`` sampled policy episodes from one initial state; the policy sees frames of its own
    size and view, the PRM gets them at ``image_size`` from ``camera`` (``None``: the policy's)."""
    from vla_rl.evaluate import run_episodes

    records = run_episodes(
        policy,
        task,
        [seed] * count,
        policy.image_size or image_size,
        num_envs=count,
        greedy=False,
        temperature=temperature,
        keep_frames=count,
        prm_image_size=image_size,
        prm_camera=camera,
    )
    return [
        {"frames": np.stack(r.get("prm_frames", r["frames"])), "instruction": r["instruction"], "success": r["success"]}
        for r in records
    ]


def rollout_scores(prm, rollouts: list[dict], select: str) -> np.ndarray:
    """One score per rollout: PRM P(completed) of its last frame, or mean over its frames (each
    averaged over the PRM's causal score window, as in its rewards)."""
    from reward.prm_metrics import causal_mean
    from vla_rl import keys

    window = prm.score_window
    scores = []
    for rollout in rollouts:
        frames = rollout["frames"] if select == "mean" else rollout["frames"][-window:]
        infos = [
            {keys.SUCCESS: rollout["success"] and i == len(frames) - 1, keys.PROGRESS: 0.0} for i in range(len(frames))
        ]
        values = causal_mean(prm.score(frames, [rollout["instruction"]] * len(frames), infos), window)
        scores.append(float(values[-1] if select == "final" else values.mean()))
    return np.asarray(scores)


def selection_curves(successes: np.ndarray, scores: np.ndarray, ns: list[int]) -> dict:
    """Success vs N for PRM, random and oracle selection.

    Args:
        successes: ``(S, Nmax)`` bool, rollout success per initial state.
        scores: ``(S, Nmax)`` PRM score per rollout (ties broken by the first rollout).
        ns: the N values (each <= Nmax); selection among the first N rollouts of each state.
    """
    curves = {"n": list(ns), "prm": [], "random": [], "oracle": []}
    for n in ns:
        pick = np.argmax(scores[:, :n], axis=1)
        curves["prm"].append(float(successes[np.arange(len(successes)), pick].mean()))
        curves["random"].append(float(successes[:, :n].mean()))
        curves["oracle"].append(float(successes[:, :n].any(axis=1).mean()))
    return curves


def plot(curves: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, style in (("oracle", "--"), ("prm", "-o"), ("random", ":s")):
        ax.plot(curves["n"], curves[name], style, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(curves["n"], [str(n) for n in curves["n"]])
    ax.set_xlabel("N rollouts per initial state")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def run(args) -> dict:
    import torch

    import envs

    for task in args.tasks:
        envs.task_id(task)
    prm = load_prm(args.prm_model_name_or_path, args.prm_checkpoint_path)
    args.image_size = args.image_size or prm.image_size or 56
    policy = None
    if args.policy != "expert":
        from vla_rl.policy.checkpoint import load_policy

        torch.manual_seed(args.seed)
        policy = load_policy(args.policy, "--policy")
    rng = np.random.default_rng(args.seed)
    nmax = max(args.n)
    report = {"args": vars(args), "per_task": {}}
    started = time.time()
    all_success, all_scores = [], []
    for t, task in enumerate(args.tasks):
        successes, scores = [], []
        for s in range(args.num_states):
            seed = args.seed + t * 100_000 + s
            if policy is None:
                rollouts = expert_rollouts(
                    task, seed, nmax, args.image_size, args.expert_noise, args.decoy_fraction, rng, prm.camera
                )
            else:
                rollouts = policy_rollouts(policy, task, seed, nmax, args.image_size, args.temperature, prm.camera)
            first = rollouts[0]["frames"][0]
            if any(not np.array_equal(r["frames"][0], first) for r in rollouts):
                raise RuntimeError(f"{task} seed {seed}: rollouts did not start from the same initial state.")
            successes.append([r["success"] for r in rollouts])
            scores.append(rollout_scores(prm, rollouts, args.select))
            print(f"{task} state {s + 1}/{args.num_states}: successes {sum(successes[-1])}/{nmax}", flush=True)
        successes, scores = np.asarray(successes, bool), np.asarray(scores)
        report["per_task"][task] = selection_curves(successes, scores, args.n)
        all_success.append(successes)
        all_scores.append(scores)
    report["overall"] = selection_curves(np.concatenate(all_success), np.concatenate(all_scores), args.n)
    report["seconds"] = round(time.time() - started, 1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "best_of_n.json"), "w") as f:
        json.dump(report, f, indent=1)
    policy_name = "scripted expert" if policy is None else os.path.basename(args.policy.rstrip("/"))
    plot(report["overall"], os.path.join(args.out, "best_of_n.png"), f"best-of-N, {policy_name}, select={args.select}")
    return report


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m reward.best_of_n", description=__doc__.split("\n\n")[0])
    p.add_argument("--prm_model_name_or_path", required=True, help=f"Qwen2-VL checkpoint or one of {BUILTIN_PRMS}")
    p.add_argument("--prm_checkpoint_path", default=None, help="LoRA adapter directory")
    p.add_argument("--policy", default="expert", help="VLA checkpoint directory, or 'expert'")
    p.add_argument("--tasks", nargs="+", default=["reach", "push"])
    p.add_argument("--num_states", type=int, default=20, help="initial states per task")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8], help="N values (rollouts per state)")
    p.add_argument("--select", choices=["final", "mean"], default="final", help="score of a rollout")
    p.add_argument("--temperature", type=float, default=1.0, help="VLA sampling temperature")
    p.add_argument("--expert_noise", type=float, default=0.3, help="expert action-noise std")
    p.add_argument("--decoy_fraction", type=float, default=0.5, help="expert rollouts aimed at another block")
    p.add_argument(
        "--image_size", type=int, default=0, help="side of the frames the PRM scores (0: its training size, else 56)"
    )
    p.add_argument("--seed", type=int, default=seed_ranges.HELDOUT, help="first initial-state seed (held out)")
    p.add_argument("--out", required=True, help="report directory")
    args = p.parse_args(argv)
    if args.num_states < 1 or min(args.n) < 1:
        p.error("--num_states and every --n must be >= 1")
    if args.temperature <= 0 or args.expert_noise < 0 or not 0 <= args.decoy_fraction <= 1:
        p.error("--temperature must be > 0, --expert_noise >= 0, --decoy_fraction in [0, 1]")
    args.n = sorted(set(args.n))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overall = report["overall"]
    for i, n in enumerate(overall["n"]):
        print(
            f"N={n}: prm {overall['prm'][i]:.3f}  random {overall['random'][i]:.3f}  oracle {overall['oracle'][i]:.3f}"
        )
    print(f"wrote {os.path.join(args.out, 'best_of_n.json')} and best_of_n.png ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
