"""DAgger for the warm start: roll out the policy being cloned, label every state it visits with
the scripted expert's noise-free action, and add those samples to the cloning data.

Behaviour cloning sees only states near the expert's paths; a cloned policy that drifts off
them has never seen how to come back and keeps going. DAgger (Ross, Gordon and Bagnell, 2011)
trains on the states the policy itself reaches. Each step executes the expert's action with
probability ``beta`` and the policy's deterministic action otherwise, as in the paper, so early
rounds still reach the states near the goal. The policy's action is decoded as the evaluation
decodes it (``greedy_decoding``, by default each token the bin nearest its expected bin), so the
states labelled are the ones the evaluated policy visits, and an episode runs to the task's own
step limit unless ``max_steps`` cuts it shorter: a policy slower than the expert still gets its
late states labelled. The expert runs beside the policy on the same env, so its
phase machine follows the visited states.
"""

from __future__ import annotations

import numpy as np

from vla_rl import seed_ranges
from vla_rl.cli import require_between


def collect(
    policy,
    tasks: list[str],
    episodes_per_task: int,
    image_size: int,
    seed: int,
    beta: float,
    max_steps: int = 0,
    num_envs: int = 16,
    greedy_decoding: str = "mean",
) -> dict:
    """Samples of ``episodes_per_task`` episodes per task, as arrays: ``images``, ``states``,
    ``actions`` (the expert's labels), ``instructions``, ``colour_positions``; plus
    ``success_rate`` of the executed (mixed) episodes. ``max_steps`` 0: each task's own step limit."""
    require_between(beta, 0, 1, "--dagger_beta")
    if max_steps < 0:
        raise ValueError(f"--dagger_max_steps must be >= 0 (0: each task's own step limit), got {max_steps}.")
    rng = np.random.default_rng(seed)
    out = {"images": [], "states": [], "actions": [], "instructions": [], "colour_positions": []}
    successes = []
    for task_index, task in enumerate(tasks):
        task_seeds = [seed_ranges.DAGGER + seed * 100_003 + task_index * 10_007 + i for i in range(episodes_per_task)]
        successes += _task_samples(
            policy, task, task_seeds, image_size, beta, max_steps, num_envs, rng, out, greedy_decoding
        )
    arrays = {k: np.stack(v) for k, v in out.items() if k != "instructions"}
    return {**arrays, "instructions": out["instructions"], "success_rate": float(np.mean(successes))}


def _task_samples(
    policy, task, seeds, image_size, beta, max_steps, num_envs, rng, out: dict, greedy_decoding: str
) -> list[bool]:
    """Run one task's episodes (one per seed, ``num_envs`` at a time), appending the labelled
    states to ``out``; returns the episodes' success."""
    import gymnasium as gym

    import envs
    from envs.demos import colour_positions
    from envs.experts import make_expert
    from vla_rl import keys

    seeds = list(seeds)
    options = {"image_size": image_size, "camera": policy.camera}  # the view the policy was cloned on
    slots = [gym.make(envs.task_id(task), **options) for _ in range(min(num_envs, len(seeds)))]
    experts = [make_expert(env) for env in slots]
    observations, instructions, steps = [None] * len(slots), [""] * len(slots), [0] * len(slots)
    live, successes = [], []

    def start(i: int) -> None:
        observation, info = slots[i].reset(seed=seeds.pop(0))
        experts[i].reset()
        observations[i], instructions[i], steps[i] = observation, info[keys.INSTRUCTION], 0
        live.append(i)

    for i in range(len(slots)):
        start(i)
    try:
        while live:
            batch = sorted(live)
            images = np.stack([observations[i][keys.IMAGE] for i in batch])
            states = np.stack([observations[i][keys.STATE] for i in batch])
            texts = [instructions[i] for i in batch]
            chosen = policy.act(images, texts, states, greedy=True, greedy_decoding=greedy_decoding)["actions"]
            for row, i in enumerate(batch):
                label = experts[i].act()  # noise-free: the expert has no action noise here
                out["images"].append(images[row])
                out["states"].append(states[row])
                out["actions"].append(label)
                out["instructions"].append(texts[row])
                out["colour_positions"].append(colour_positions(slots[i].unwrapped.coloured_objects()))
                action = label if rng.random() < beta else np.clip(chosen[row], -1.0, 1.0).astype(np.float32)
                observations[i], _, terminated, truncated, info = slots[i].step(action)
                steps[i] += 1
                if terminated or truncated or steps[i] == max_steps:
                    successes.append(bool(info[keys.SUCCESS]))
                    live.remove(i)
                    if seeds:
                        start(i)
    finally:
        for env in slots:
            env.close()
    return successes
