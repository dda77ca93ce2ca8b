"""How precisely must a push policy locate the block and the pad? The scripted expert with noisy eyes.

Usage::

    .venv/bin/python bench/push_localisation.py [--episodes 100] [--noise_cm 0 0.5 1 2 3] [--out results.json]

The push expert (:class:`envs.experts.PushExpert`) reads the named block's and pad's positions
from the simulator. Here it reads them with a Gaussian error of a given size (the same sd on x
and y of each object), as a policy that locates them from pixels would, and pushes on what it
reads; the task still judges the true positions. Two error models:

* ``episode``: one error per object per episode (a fixed misreading of where things are; the
  pad does not move, and a vision tower's error on a given scene is mostly such a bias);
* ``frame``: a fresh error every step (jitter; it flips the expert between its approach, push
  and back-off phases, so it costs more than the same error held fixed).

The anchor is the noise-free expert (0 cm). The line to read against is the localisation error
the project's vision tower reaches at 56 px (a mean xy error of about 2.2 cm, "Vision
pretraining" in ``bench/README.md``) and the shipped warm start's push success (27-35 % sampled,
on different days): if the expert
with that error succeeds about as rarely, push is bounded by where the policy sees things, not
by how it acts, and reinforcement learning on the actions has little to gain.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

PUSH = "VLARL/Push-v0"


class NoisyEyes:
    """The push env as the expert sees it: the named block and pad positions read with an error
    (``xy`` offsets in metres, set per episode or per step); everything else is the env's."""

    def __init__(self, env):
        self._env = env
        self.block_error = np.zeros(2)
        self.pad_error = np.zeros(2)

    def __getattr__(self, name):
        return getattr(self._env, name)

    @property
    def unwrapped(self):
        return self

    @property
    def target_block_pos(self) -> np.ndarray:
        pos = self._env.target_block_pos
        pos[:2] += self.block_error
        return pos

    @property
    def target_pad_pos(self) -> np.ndarray:
        pos = self._env.target_pad_pos
        pos[:2] += self.pad_error
        return pos

    def push_direction(self) -> np.ndarray:
        from envs.tasks import PushEnv

        return PushEnv.push_direction(self)

    def pusher_point(self, direction: np.ndarray | None = None) -> np.ndarray:
        from envs.tasks import PushEnv

        return PushEnv.pusher_point(self, direction)


def run(episodes: int, noise_cm: float, model: str, seed_base: int, image_size: int) -> dict:
    """Success rate and mean length of the expert reading positions with ``noise_cm`` of error."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the tasks)
    from envs.experts import PushExpert
    from vla_rl import keys

    env = gym.make(PUSH, image_size=image_size)
    eyes = NoisyEyes(env.unwrapped)
    expert = PushExpert(eyes)  # it acts on what the eyes read
    rng = np.random.default_rng(seed_base + int(noise_cm * 1000) + (model == "frame"))
    sd = noise_cm / 100.0
    successes, lengths = [], []
    try:
        for episode in range(episodes):
            env.reset(seed=seed_base + episode)
            expert.reset()
            eyes.block_error, eyes.pad_error = rng.normal(0.0, sd, 2), rng.normal(0.0, sd, 2)
            done, success, length = False, False, 0
            while not done:
                if model == "frame":
                    eyes.block_error, eyes.pad_error = rng.normal(0.0, sd, 2), rng.normal(0.0, sd, 2)
                _, _, terminated, truncated, info = env.step(expert.act())
                done, success, length = terminated or truncated, bool(info[keys.SUCCESS]), length + 1
            successes.append(success)
            lengths.append(length)
    finally:
        env.close()
    return {"success_rate": float(np.mean(successes)), "mean_length": float(np.mean(lengths)), "episodes": episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=100, help="episodes (seeds) per cell")
    parser.add_argument("--noise_cm", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--models", nargs="+", default=["episode", "frame"], choices=["episode", "frame"])
    parser.add_argument("--seed_base", type=int, default=1_000_000, help="first seed (the evaluation range)")
    parser.add_argument("--image_size", type=int, default=56, help="frame side (the expert does not look)")
    parser.add_argument("--out", default="", help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.episodes < 1 or any(n < 0 for n in args.noise_cm):
        parser.error("--episodes must be >= 1 and every --noise_cm >= 0")
    rows = []
    anchor = None
    print(f"push expert, {args.episodes} seeds from {args.seed_base}; error sd per axis of block and pad")
    for model in args.models:
        for noise in args.noise_cm:
            start = time.perf_counter()
            result = run(args.episodes, noise, model, args.seed_base, args.image_size)
            row = {"model": model, "noise_cm": noise, **result}
            if noise == 0 and anchor is None:
                anchor = row["success_rate"]
            ratio = f"{row['success_rate'] / anchor:.2f}x of noise-free" if anchor else "n/a"
            print(
                f"{model:7s} {noise:4.1f} cm: success {row['success_rate']:.3f} ({ratio}), "
                f"mean length {row['mean_length']:.1f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            rows.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
