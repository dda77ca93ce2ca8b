"""Scale-out benchmarks: Ray env workers and the PRM server, against in-process anchors.

Usage::

    .venv/bin/python bench/scale_out.py [--model DIR] [--num_envs 8] [--image_size 56] [--out results.json]

Printed against anchors measured in the same run:

* env stepping (random actions, ``--num_envs`` envs over reach and push, ``--image_size`` px):
  in-process ``SyncVectorEnv`` (anchor) vs ``RayVectorEnv`` with 1 and 2 worker actors, steps/s;
* PRM frames/s at an equal total batch: direct ``QwenProcessRM.score`` on 64 frames with one
  math thread like the actors (anchor; also with all threads) vs
  the PRM server receiving 4 concurrent requests of 16 frames (merged into one call), and the
  server with merging off (``max_batch_size`` 16: 4 calls of 16).

Without ``--model`` the PRM is the embedded ``assets/models/vla-small`` checkpoint (a Qwen2-VL
model; its scores mean nothing here, its speed is that of a small PRM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

SERVER_SETUPS = (("server, 4 x 16 merged (max batch 64)", 64), ("server, 4 x 16 unmerged (max batch 16)", 16))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_steps_per_s(env, steps: int) -> float:
    env.reset(seed=list(range(env.num_envs)))
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, env.num_envs, 7)).astype(np.float32)
    env.step(actions[0])
    start = time.perf_counter()
    for t in range(1, steps):
        env.step(actions[t])
    return (steps - 1) * env.num_envs / (time.perf_counter() - start)


def bench_envs(args) -> list[dict]:
    import gymnasium as gym

    from vla_rl.distributed.env_workers import RayVectorEnv
    from vla_rl.rollout import assign_tasks, task_env_fns

    assigned = assign_tasks(["reach", "push"], args.num_envs)
    rows = []
    local = gym.vector.SyncVectorEnv(task_env_fns(assigned, args.image_size))
    anchor = env_steps_per_s(local, args.steps)
    local.close()
    rows.append({"setup": "in-process SyncVectorEnv", "steps_per_s": anchor, "ratio": 1.0})
    for workers in (1, 2):
        share = [{"num_cpus": min(1.0, (os.cpu_count() or 1) / workers)}] * workers
        env = RayVectorEnv(assigned, args.image_size, 0, num_workers=workers, actor_options=share)
        rate = env_steps_per_s(env, args.steps)
        env.close()
        rows.append({"setup": f"Ray, {workers} worker(s)", "steps_per_s": rate, "ratio": rate / anchor})
    return rows


def bench_prm(args) -> list[dict]:
    import ray

    from vla_rl.distributed.prm_server import PRMSpec, start_prm_server

    spec = PRMSpec(args.model, device="cpu", batch_size=64)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (64, args.image_size, args.image_size, 3), dtype=np.uint8)
    texts = ["touch the red block"] * 64
    import torch

    prm = spec.build()
    rows = []
    threads = torch.get_num_threads()
    for count in (1, threads):  # the actors run one math thread each: the anchor is the 1-thread call
        torch.set_num_threads(count)
        prm.score(frames, texts)
        start = time.perf_counter()
        for _ in range(args.repeats):
            prm.score(frames, texts)
        rate = 64 * args.repeats / (time.perf_counter() - start)
        rows.append({"setup": f"direct QwenProcessRM.score, batch 64, {count} thread(s)", "frames_per_s": rate})
    torch.set_num_threads(threads)
    del prm
    anchor = rows[0]["frames_per_s"]
    for row in rows:
        row["ratio"] = row["frames_per_s"] / anchor
    for label, max_batch in SERVER_SETUPS:
        server, _ = start_prm_server(spec, max_batch_size=max_batch, max_wait_ms=20)
        ray.get([server.score.remote(frames[i : i + 16], texts[i : i + 16]) for i in range(0, 64, 16)])
        before = ray.get(server.stats.remote())
        start = time.perf_counter()
        for _ in range(args.repeats):
            ray.get([server.score.remote(frames[i : i + 16], texts[i : i + 16]) for i in range(0, 64, 16)])
        rate = 64 * args.repeats / (time.perf_counter() - start)
        after = ray.get(server.stats.remote())
        calls = after["calls"] - before["calls"]
        rows.append(
            {
                "setup": label,
                "frames_per_s": rate,
                "ratio": rate / anchor,
                "frames_per_call": (after["frames"] - before["frames"]) / max(calls, 1),
            }
        )
        ray.kill(server)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "assets", "models", "vla-small"))
    parser.add_argument("--num_envs", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=56)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    from vla_rl.distributed.ray_setup import init_ray

    print(init_ray())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    results = {"envs": bench_envs(args), "prm": bench_prm(args)}
    print(f"\nenv stepping, {args.num_envs} envs (reach, push) at {args.image_size} px, random actions")
    for row in results["envs"]:
        print(f"  {row['setup']:<52} {row['steps_per_s']:8.1f} steps/s   {row['ratio']:.2f}x")
    print(f"\nPRM {os.path.basename(args.model)} at {args.image_size} px, 64 frames per round")
    for row in results["prm"]:
        extra = f"   {row['frames_per_call']:.0f} frames/call" if "frames_per_call" in row else ""
        print(f"  {row['setup']:<52} {row['frames_per_s']:8.1f} frames/s  {row['ratio']:.2f}x{extra}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
