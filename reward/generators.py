"""Episode generators for PRM datasets: perturbed scripted experts (method 2) and policy rollouts
with a difficulty band (method 1). See :mod:`reward.data` for the command line and the format."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_rl import keys


@dataclass
class GeneratedEpisode:
    """One labelled episode of ``T`` frames, before it is written."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    states: np.ndarray  # (T, 8) float32
    success: np.ndarray  # (T,) bool, info["success"] per frame
    progress: np.ndarray  # (T,) float32, info["progress"] per frame
    task: str
    instruction: str
    seed: int
    source: str
    extra: dict = field(default_factory=dict)
    colour_positions: np.ndarray | None = None  # (T, C, 3) float32: each palette colour's object (NaN: absent)


# ----------------------------------------------------------------------------- method 2
# Tasks with several destinations: (attribute naming the destination, attribute counting them).
DESTINATIONS = (("target_pad", "num_pads"), ("target_tray", "num_trays"))
POST_SUCCESS_MOTIONS = ("hold", "retreat", "mixed")


def decoy_target(env, rng: np.random.Generator, destinations: bool = False) -> dict[str, int] | None:
    """What to aim the expert at instead of the named objects: another block than the named one,
    or (with ``destinations``, on tasks with several pads or trays) the named block to another
    destination, the two drawn with equal odds. None if the scene has no alternative."""
    base = env.unwrapped
    options = []
    if hasattr(base, "target_block") and getattr(base, "num_blocks", 1) >= 2:
        options.append(("target_block", base.num_blocks))
    if destinations:
        options += [(name, getattr(base, count)) for name, count in DESTINATIONS if hasattr(base, name)]
        options = [(name, count) for name, count in options if count >= 2]
    if not options:
        return None
    name, count = options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]
    return {name: int((getattr(base, name) + rng.integers(1, count)) % count)}


def expert_action(expert, env, decoy: dict[str, int] | None) -> np.ndarray:
    """The expert's action, planned towards the ``decoy`` targets instead of the named ones if given."""
    base = env.unwrapped
    if not decoy:
        return expert.act()
    named = {name: getattr(base, name) for name in decoy}
    for name, value in decoy.items():
        setattr(base, name, value)
    try:
        return expert.act()
    finally:
        for name, value in named.items():
            setattr(base, name, value)


def hold(action: np.ndarray) -> np.ndarray:
    """Stay put with the gripper as it was: the action after success, so that the recorded
    "completed" frames still show the completed scene."""
    still = np.zeros_like(action)
    still[6] = action[6]
    return still


def retreat_direction(env, rng: np.random.Generator) -> np.ndarray:
    """Unit (2,) horizontal direction for backing away after success: from the named block
    towards the gripper, turned by up to 60 degrees either way (any direction if they coincide)."""
    base = env.unwrapped
    away = base.tcp_pos[:2] - base.target_block_pos[:2] if hasattr(base, "target_block_pos") else np.zeros(2)
    angle = float(np.arctan2(away[1], away[0])) if np.linalg.norm(away) > 1e-3 else rng.uniform(-np.pi, np.pi)
    angle += rng.uniform(-np.pi / 3, np.pi / 3)
    return np.array([np.cos(angle), np.sin(angle)])


def retreat(action: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Rise and move away along ``direction`` with the gripper as it was: after success, so that
    "completed" frames also show the finished scene with the arm leaving it."""
    out = np.zeros_like(action)
    out[:2] = 0.6 * direction
    out[2] = 1.0
    out[6] = action[6]
    return out


def expert_episode(
    env,
    expert,
    seed: int,
    decoy_rng,
    decoy_fraction: float,
    post_success: int,
    max_steps: int = 0,
    post_success_motion: str = "hold",
    decoy_destinations: bool = False,
    stop_short: float | None = None,
    short_stop_band: float = 0.03,
) -> GeneratedEpisode:
    """One (perturbed) expert episode of at most ``max_steps`` actions (0: the task's limit).

    After success it records up to ``post_success`` more frames while the task stays completed,
    the arm holding still (``"hold"``), rising and backing away (``"retreat"``), or one of the
    two drawn per episode (``"mixed"``); in tasks whose success needs the gripper (reach) it
    holds. A ``decoy_fraction`` of episodes is aimed at another block (with
    ``decoy_destinations``, also: the named block to another pad or tray).

    With ``stop_short`` (metres; tasks with ``goal_distance()``), the expert stops as soon as
    the task's goal distance is under it — or, within ``short_stop_band`` of the tolerance,
    when one more step at the pace of the last would complete the task — and holds still for
    ``post_success`` more frames: a near miss whose last frames look almost completed (the
    block partly on its pad, the fingertips just above the block). The labels stay the
    simulator's: a block that slides on into success counts as completed there."""
    if post_success_motion not in POST_SUCCESS_MOTIONS:
        raise ValueError(f"post_success_motion must be one of {POST_SUCCESS_MOTIONS}, got {post_success_motion!r}")
    from envs.demos import colour_positions

    obs, info = env.reset(seed=seed)
    expert.reset()
    decoy = decoy_target(env, decoy_rng, decoy_destinations) if decoy_rng.random() < decoy_fraction else None
    backs_away = post_success_motion == "retreat" or (post_success_motion == "mixed" and decoy_rng.random() < 0.5)
    backs_away = backs_away and not getattr(env.unwrapped, "success_needs_gripper", False)
    direction = None
    coloured = getattr(env.unwrapped, "coloured_objects", None)
    colours = [colour_positions(coloured())] if coloured else []
    frames, states = [obs[keys.IMAGE]], [obs[keys.STATE]]
    success, progress = [info[keys.SUCCESS]], [info[keys.PROGRESS]]
    limit = max_steps or (env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 200)
    steps, after = 0, None  # after: frames recorded since success
    stopped = None  # frames recorded since the expert stopped short
    tolerance, last_distance = getattr(env.unwrapped, "tolerance", 0.0), np.inf
    action = np.zeros(7, np.float32)
    while True:
        if stop_short is not None and after is None and stopped is None:
            distance = env.unwrapped.goal_distance()
            # stop under the drawn distance, or (within the band) before a step at this pace would complete
            ahead = 2 * distance - last_distance < tolerance and distance < tolerance + short_stop_band
            stopped = 0 if distance < stop_short or ahead else None
            last_distance = distance
        if after is None and stopped is None:
            action = expert_action(expert, env, decoy)
        elif backs_away and after is not None:  # a short stop holds still
            direction = retreat_direction(env, decoy_rng) if direction is None else direction
            action = retreat(action, direction)
        else:
            action = hold(action)
        obs, _, terminated, _, info = env.unwrapped.step(action)
        steps += 1
        frames.append(obs[keys.IMAGE])
        states.append(obs[keys.STATE])
        success.append(info[keys.SUCCESS])
        progress.append(info[keys.PROGRESS])
        if coloured:
            colours.append(colour_positions(coloured()))
        if keys.SIM_ERROR in info:
            break
        if after is not None and not info[keys.SUCCESS]:  # e.g. a pushed block slid on past the pad
            for column in (frames, states, success, progress) + ((colours,) if coloured else ()):
                column.pop()
            break
        if after is None and terminated:
            after = 0
        elif after is not None:
            after += 1
        elif stopped is not None:
            stopped += 1
        if (
            (after is not None and after >= post_success)
            or (after is None and stopped is not None and stopped >= post_success)
            or (after is None and steps >= limit)
        ):
            break
    noise = f"noise{expert.action_noise:g}"
    return GeneratedEpisode(
        frames=np.stack(frames),
        states=np.stack(states).astype(np.float32),
        success=np.asarray(success, bool),
        progress=np.asarray(progress, np.float32),
        task=env.spec.id,
        instruction=info[keys.INSTRUCTION],
        seed=seed,
        source=f"expert-{noise}"
        + ("-decoy" if decoy else "")
        + ("-short" if stopped is not None else "")
        + ("-retreat" if backs_away and after else ""),
        colour_positions=np.stack(colours) if coloured else None,
    )


def generate_expert(config, task: str, seeds: list[int], bar) -> list[GeneratedEpisode]:
    import gymnasium as gym

    import envs
    from envs.experts import make_expert

    env = gym.make(envs.task_id(task), image_size=config.image_size, camera=config.camera)
    rng = np.random.default_rng([config.seed, len(task)])
    experts = {n: make_expert(env, action_noise=n, seed=config.seed) for n in config.noise_levels}
    tolerance = getattr(env.unwrapped, "tolerance", 0.0)
    episodes = []
    try:
        for seed in seeds:
            expert = experts[config.noise_levels[int(rng.integers(len(config.noise_levels)))]]
            stop_short = None
            if config.short_stop_fraction > 0:  # drawn only then: the other datasets keep their draws
                distance, share = tolerance + config.short_stop_margin * rng.random(), rng.random()
                stop_short = distance if share < config.short_stop_fraction else None
            episodes.append(
                expert_episode(
                    env,
                    expert,
                    seed,
                    rng,
                    config.decoy_fraction,
                    config.post_success_frames,
                    max_steps=config.max_env_length,
                    post_success_motion=config.post_success_motion,
                    decoy_destinations=config.decoy_destinations,
                    stop_short=stop_short,
                    short_stop_band=config.short_stop_margin,
                )
            )
            bar.update(1)
    finally:
        env.close()
    return episodes


# ----------------------------------------------------------------------------- method 1
def generate_policy(config, task: str, seeds: list[int], bar, policy) -> list[GeneratedEpisode]:
    """``num_rollouts`` sampled policy episodes per candidate initial state; keeps the states
    whose failure rate is inside ``band`` until ``num_samples`` are kept. The policy sees frames
    of its own size and view; the dataset records them at ``image_size`` from ``camera``
    (rendered beside them where the two differ)."""
    from vla_rl.evaluate import run_episodes

    episodes, kept = [], 0
    for seed in seeds:
        rollouts = run_episodes(
            policy,
            task,
            [seed] * config.num_rollouts,
            policy.image_size or config.image_size,
            num_envs=config.num_rollouts,
            greedy=False,
            temperature=config.temperature,
            max_env_length=config.max_env_length or None,
            keep_frames=config.num_rollouts,
            prm_image_size=config.image_size,
            prm_camera=config.camera,
        )
        failure_rate = 1.0 - float(np.mean([r["success"] for r in rollouts]))
        bar.set_postfix(kept=kept, failure=f"{failure_rate:.2f}")
        if not config.band[0] <= failure_rate <= config.band[1]:
            continue
        for r in rollouts:
            episodes.append(
                GeneratedEpisode(
                    frames=np.stack(r.get("prm_frames", r["frames"])),
                    states=np.stack(r["states"]).astype(np.float32),
                    success=np.asarray([i[keys.SUCCESS] for i in r["infos"]], bool),
                    progress=np.asarray([i[keys.PROGRESS] for i in r["infos"]], np.float32),
                    task=task,
                    instruction=r["instruction"],
                    seed=seed,
                    source="policy",
                    extra={"initial_state_failure_rate": failure_rate},
                    colour_positions=np.stack(r["colour_positions"]) if "colour_positions" in r else None,
                )
            )
        kept += 1
        bar.update(1)
        if kept >= config.num_samples:
            break
    return episodes
