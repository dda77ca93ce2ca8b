"""Record scripted-expert demonstrations to disk, and read them back.

Command line::

    python -m envs.demos --tasks pick_place stack --episodes 100 --out data/demos/expert

On-disk format (version 1), one directory::

    meta.json               format_version, env ids, image size, camera, seeds, and one record
                            per episode: file, task, env_id, seed, instruction, length, success
    episode_000000.npz      one episode of T steps (numpy .npz, compressed):
        images       uint8   (T+1, H, W, 3)  observation images; [0] is the reset frame
        states       float32 (T+1, 8)        proprioceptive states
        actions      float32 (T, 7)          action taken at observation t
        expert_actions float32 (T, 7)        the expert's noise-free action at observation t
                                             (equal to ``actions`` without --action-noise)
        named_positions float32 (T+1, 2, 3)  world positions of the named block and of where
                                             it goes (privileged; auxiliary training targets)
        colour_positions float32 (T+1, C, 3) world position of the object of each palette colour
                                             (envs.scene.COLOUR_NAMES order; NaN where the scene
                                             has none): the answers of the grounding loss
        alternative_instructions str (A,)    (tasks whose expert gives counterfactual labels,
        alternative_actions float32 (T, A, 7) reach and push) the instructions naming the other
                                             objects and the expert's noise-free action at
                                             observation t had the instruction been that one;
                                             NaN where the expert leaves that label out
        rewards      float32 (T,)            environment (sparse) rewards
        success      bool    (T+1,)          info["success"] after reset / after each step
        progress     float32 (T+1,)          info["progress"] likewise
        terminated   bool    ()              the episode ended in success
        truncated    bool    ()              the episode hit the step limit (or a sim error)
        instruction  str     ()              the language instruction
        seed         int64   ()              reset seed

The directory is written under a temporary name and renamed into place at the end, so an
interrupted run never leaves a partial dataset where a complete one is expected.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from envs.scene import COLOUR_NAMES
from vla_rl import keys
from vla_rl.atomic import atomic_directory
from vla_rl.versioned import read_versioned_json

FORMAT_VERSION = 1
META_FILE = "meta.json"


@dataclass
class Episode:
    """One recorded episode (see the module docstring for shapes)."""

    images: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray
    progress: np.ndarray
    terminated: bool
    truncated: bool
    instruction: str
    seed: int
    expert_actions: np.ndarray | None = None
    named_positions: np.ndarray | None = None
    alternative_instructions: np.ndarray | None = None
    alternative_actions: np.ndarray | None = None
    colour_positions: np.ndarray | None = None

    def save(self, path: str) -> None:
        """Write compressed, via a temporary file and an atomic rename."""
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez_compressed(
            tmp,
            images=self.images,
            states=self.states,
            actions=self.actions,
            rewards=self.rewards,
            success=self.success,
            progress=self.progress,
            terminated=np.bool_(self.terminated),
            truncated=np.bool_(self.truncated),
            instruction=np.str_(self.instruction),
            seed=np.int64(self.seed),
            **({} if self.expert_actions is None else {"expert_actions": self.expert_actions}),
            **({} if self.named_positions is None else {"named_positions": self.named_positions}),
            **({} if self.colour_positions is None else {"colour_positions": self.colour_positions}),
            **(
                {}
                if self.alternative_actions is None
                else {
                    "alternative_instructions": self.alternative_instructions,
                    "alternative_actions": self.alternative_actions,
                }
            ),
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Episode:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name] for name in data.files}
        return cls(
            images=fields["images"],
            states=fields["states"],
            actions=fields["actions"],
            rewards=fields["rewards"],
            success=fields["success"],
            progress=fields["progress"],
            terminated=bool(fields["terminated"]),
            truncated=bool(fields["truncated"]),
            instruction=str(fields["instruction"]),
            seed=int(fields["seed"]),
            expert_actions=fields.get("expert_actions"),
            named_positions=fields.get("named_positions"),
            alternative_instructions=fields.get("alternative_instructions"),
            alternative_actions=fields.get("alternative_actions"),
            colour_positions=fields.get("colour_positions"),
        )


def colour_positions(objects: list[tuple[str, list[int], np.ndarray]]) -> np.ndarray:
    """``(C, 3) float32``: the world position of each palette colour's object in
    ``coloured_objects()`` (NaN for colours the scene does not show)."""
    out = np.full((len(COLOUR_NAMES), 3), np.nan, np.float32)
    for colour, _, position in objects:
        out[COLOUR_NAMES.index(colour)] = position
    return out


def run_expert_episode(env, expert, seed: int) -> Episode:
    """Roll the expert out from ``env.reset(seed=seed)`` until the episode ends."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    images, states, actions, rewards, clean = [obs["image"]], [obs["state"]], [], [], []
    success, progress = [info["success"]], [info["progress"]]
    named = getattr(env.unwrapped, "named_positions", None)
    positions = [named()] if named else []
    coloured = getattr(env.unwrapped, "coloured_objects", None)
    colours = [colour_positions(coloured())] if coloured else []
    terminated = truncated = False
    alternatives = []
    while not (terminated or truncated):
        action = expert.act()
        clean.append(expert.last_plan)
        alternatives.append(expert.counterfactual_labels())
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        images.append(obs["image"])
        states.append(obs["state"])
        success.append(info["success"])
        progress.append(info["progress"])
        if named:
            positions.append(named())
        if coloured:
            colours.append(colour_positions(coloured()))
    return Episode(
        images=np.stack(images),
        states=np.stack(states).astype(np.float32),
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, np.float32),
        success=np.asarray(success, bool),
        progress=np.asarray(progress, np.float32),
        terminated=bool(terminated),
        truncated=bool(truncated),
        instruction=info["instruction"],
        seed=seed,
        expert_actions=np.stack(clean).astype(np.float32),
        named_positions=np.stack(positions).astype(np.float32) if named else None,
        colour_positions=np.stack(colours) if coloured else None,
        **(
            {
                "alternative_instructions": np.array([text for text, _ in alternatives[0]]),
                "alternative_actions": np.array([[a for _, a in step] for step in alternatives], np.float32),
            }
            if alternatives[0]
            else {}
        ),
    )


def read_meta(directory: str) -> dict:
    """The ``meta.json`` of a demonstration directory, checked for the format version."""
    path = os.path.join(directory, META_FILE)
    return read_versioned_json(
        path,
        FORMAT_VERSION,
        f"{path} not found: {directory!r} is not a demonstration directory "
        f"(record one with `python -m envs.demos --out {directory}`).",
    )


def iter_episodes(directory: str):
    """Yield ``(record, Episode)`` for every episode listed in the directory's meta.json."""
    for record in read_meta(directory)["episodes"]:
        yield record, Episode.load(os.path.join(directory, record["file"]))


def record(
    tasks: list[str],
    episodes: int,
    out: str,
    seed: int = 0,
    image_size: int = 128,
    action_noise: float = 0.0,
    successes_only: bool = False,
    overwrite: bool = False,
    progress_bar: bool = True,
    camera: str = keys.FRONT_CAMERA,
) -> dict:
    """Record ``episodes`` expert episodes per task into the directory ``out``; return meta.

    ``images`` come from ``camera`` (``keys.VIEWS``): a policy cloned on them observes
    through that camera.

    Seeds are ``seed, seed+1, ...`` per task (episodes that fail are skipped with
    ``successes_only``, and further seeds are drawn until ``episodes`` are kept).
    """
    import gymnasium as gym
    from tqdm import tqdm

    import envs
    from envs.experts import make_expert

    env_ids = [envs.task_id(task) for task in tasks]  # validates the names before any work
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}.")
    if not 16 <= image_size <= 256:
        raise ValueError(f"--image-size must be in 16..256, got {image_size}.")
    if camera not in keys.VIEWS:
        raise ValueError(f"--camera must be one of {', '.join(keys.VIEWS)}, got {camera!r}.")
    if not (np.isfinite(action_noise) and action_noise >= 0):
        raise ValueError(f"--action-noise must be a finite value >= 0, got {action_noise}.")
    records: list[dict] = []
    started = time.time()
    with atomic_directory(out, overwrite) as tmp:
        bar = tqdm(total=episodes * len(env_ids), desc="recording demos", unit="ep", disable=not progress_bar)
        for env_id in env_ids:
            env = gym.make(env_id, image_size=image_size, camera=camera)
            expert = make_expert(env, action_noise=action_noise, seed=seed)
            kept, next_seed = 0, seed
            while kept < episodes:
                if next_seed - seed > 20 * episodes:
                    raise RuntimeError(f"{env_id}: the expert succeeded in only {kept} of {next_seed - seed} episodes.")
                episode = run_expert_episode(env, expert, next_seed)
                next_seed += 1
                if successes_only and not episode.terminated:
                    continue
                name = f"episode_{len(records):06d}.npz"
                episode.save(os.path.join(tmp, name))
                records.append(
                    {
                        "file": name,
                        "task": env_id,
                        "seed": episode.seed,
                        "instruction": episode.instruction,
                        "length": len(episode.actions),
                        "success": episode.terminated,
                    }
                )
                kept += 1
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([r['success'] for r in records]):.2f}")
            env.close()
        bar.close()
        meta = {
            "format_version": FORMAT_VERSION,
            "env_ids": env_ids,
            "image_size": image_size,
            "camera": camera,
            "action_noise": action_noise,
            "seed": seed,
            "num_episodes": len(records),
            "success_rate": float(np.mean([r["success"] for r in records])),
            "seconds": round(time.time() - started, 1),
            "episodes": records,
        }
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=1)
    return meta


def main(argv: list[str] | None = None) -> int:
    import envs

    parser = argparse.ArgumentParser(prog="python -m envs.demos", description="Record scripted-expert demonstrations.")
    parser.add_argument("--tasks", nargs="+", default=["all"], help=f"task names {sorted(envs.TASKS)} or 'all'")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task")
    parser.add_argument("--out", required=True, help="output directory (created atomically)")
    parser.add_argument("--seed", type=int, default=0, help="first reset seed")
    parser.add_argument("--image-size", type=int, default=128, help="observation image side, pixels (16-256)")
    parser.add_argument(
        "--camera",
        default=keys.FRONT_CAMERA,
        help=f"camera of the recorded images ({' | '.join(keys.VIEWS)}): the view a policy cloned on them has",
    )
    parser.add_argument("--action-noise", type=float, default=0.0, help="std of Gaussian noise on expert actions")
    parser.add_argument("--successes-only", action="store_true", help="keep successful episodes only")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    tasks = sorted(envs.TASKS) if args.tasks == ["all"] else args.tasks
    try:
        meta = record(
            tasks,
            args.episodes,
            args.out,
            seed=args.seed,
            image_size=args.image_size,
            camera=args.camera,
            action_noise=args.action_noise,
            successes_only=args.successes_only,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {meta['num_episodes']} episodes to {args.out} (success rate {meta['success_rate']:.2f}, "
        f"{meta['seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
