"""Vision pretraining: teach a from-scratch vision tower where the coloured objects and the gripper are.

A small Qwen2-VL model built from nothing has to learn, from behaviour cloning alone, to find a
block of the named colour (a few pixels of a 56-px frame) and where it is relative to the
gripper; on 2 CPU cores the cloning budget is not enough for that (bench/README.md). This stage
trains the vision tower alone — cheap, the language model is not in the loop — on dense labels
the simulator gives for free: for every merged image token (the cell of the frame it covers) and
every object an instruction can name (one per palette colour) plus the gripper, whether the
object is visible in that cell (MuJoCo's segmentation rendering) and where the object is in the
world. A linear head reads both from each token and is discarded afterwards; the tower keeps
features from which the language model reads "the red block is here" with one attention hop.

Frames come from the scripted experts with action noise (the states cloning visits), on the
tasks' own seeds. Command line::

    python -m vla_rl.vision_pretrain --vla_path checkpoints/vla-init --out checkpoints/vla-vision \\
        --tasks reach push --episodes 200 --steps 3000

The output is the input checkpoint with the trained vision tower (written atomically), plus
``vision_pretrain.json``: the held-out cell F1 and position error per object kind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from envs.rendering import view_frame_shape
from envs.scene import COLOUR_NAMES
from vla_rl import keys, seed_ranges
from vla_rl.cli import require_at_least, require_positive

OBJECTS = (*COLOUR_NAMES, "gripper")  # what each token reports on, in this order
GRIPPER_BODIES = ("hand", "finger_left", "finger_right")
POSITION_SCALE = 0.15  # metres per unit of the regression targets
SUMMARY_FILE = "vision_pretrain.json"  # written beside the checkpoint: its config and held-out metrics


@dataclass
class VisionPretrainConfig:
    vla_path: str
    out: str
    tasks: tuple[str, ...] = ("reach", "push")
    episodes: int = 200
    heldout_episodes: int = 20
    image_size: int = 56
    camera: str = keys.FRONT_CAMERA
    action_noise: float = 0.3
    max_steps: int = 60
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    overwrite: bool = False

    def validate(self) -> None:
        import envs

        for task in self.tasks:
            try:
                envs.task_id(task)
            except ValueError as error:
                raise ValueError(f"--tasks: {error}") from None
        if not self.tasks:
            raise ValueError("--tasks needs at least one task.")
        for flag in ("episodes", "heldout_episodes", "max_steps", "steps", "batch_size"):
            if getattr(self, flag) < 1:
                raise ValueError(f"--{flag} must be >= 1, got {getattr(self, flag)}.")
        require_positive(self.learning_rate, "--learning_rate")
        require_at_least(self.action_noise, 0, "--action_noise")
        if self.camera not in keys.VIEWS:
            raise ValueError(f"--camera must be one of {', '.join(keys.VIEWS)}, got {self.camera!r}.")
        if os.path.exists(self.out) and not self.overwrite:
            raise FileExistsError(f"--out {self.out} already exists; pass --overwrite to replace it.")


def cell_labels(segmentation: np.ndarray, geoms: list[list[int]], cell: int) -> np.ndarray:
    """``(cells, objects) bool``: whether any pixel of object k's geoms lies in each
    ``cell x cell`` block of the frame (row-major, as the merged image tokens are ordered)."""
    height, width = segmentation.shape
    rows, cols = height // cell, width // cell
    out = np.zeros((rows * cols, len(geoms)), bool)
    for k, ids in enumerate(geoms):
        if ids:
            mask = np.isin(segmentation[: rows * cell, : cols * cell], ids)
            out[:, k] = mask.reshape(rows, cell, cols, cell).any(axis=(1, 3)).reshape(-1)
    return out


def in_camera_frame(base, camera: str, points: np.ndarray) -> np.ndarray:
    """``points (K, 3)`` (world, metres) in the frame of ``camera`` of env ``base``: x right, y up
    in the image, z out of it (MuJoCo's camera convention)."""
    index = base.model.camera(camera).id
    rotation = base.data.cam_xmat[index].reshape(3, 3)
    return (points - base.data.cam_xpos[index]) @ rotation


def record(
    tasks,
    episodes: int,
    image_size: int,
    cell: int,
    seed: int,
    action_noise: float,
    max_steps: int,
    camera: str = keys.FRONT_CAMERA,
) -> dict:
    """Frames of noisy scripted-expert episodes from ``camera`` with per-cell visibility and
    positions of every palette object and the gripper: ``images (N, H, W, 3) uint8``, ``visible
    (N, cells, objects) bool``, ``positions (N, objects, 3) float32`` (metres / POSITION_SCALE, 0
    if absent) — in the world for the fixed front camera (and a view that holds it), in the
    camera's own frame for the wrist camera alone, whose view moves with the hand."""
    import gymnasium as gym

    import envs
    from envs.experts import make_expert

    images, visible, positions = [], [], []
    for t, task in enumerate(tasks):
        env = gym.make(envs.task_id(task), image_size=image_size, camera=camera)
        base = env.unwrapped
        bodies = [base.model.body(name).id for name in GRIPPER_BODIES]
        gripper = [g for g in range(base.model.ngeom) if int(base.model.geom_bodyid[g]) in bodies]
        try:
            for episode in range(episodes):
                episode_seed = seed + 10_000 * t + episode
                obs, _ = env.reset(seed=episode_seed)
                expert = make_expert(env, action_noise=action_noise, seed=episode_seed)
                expert.reset()
                for _ in range(max_steps):
                    geoms, where = [[] for _ in OBJECTS], np.zeros((len(OBJECTS), 3), np.float32)
                    for colour, ids, pos in base.coloured_objects():
                        k = OBJECTS.index(colour)
                        geoms[k], where[k] = ids, pos
                    geoms[-1], where[-1] = gripper, base.tcp_pos
                    if camera == keys.WRIST_CAMERA:
                        where = in_camera_frame(base, camera, where).astype(np.float32)
                    images.append(obs["image"])
                    visible.append(cell_labels(base.segmentation(), geoms, cell))
                    positions.append(where / POSITION_SCALE)
                    obs, _, terminated, truncated, _ = env.step(expert.act())
                    if terminated or truncated:
                        break
        finally:
            env.close()
    return {"images": np.stack(images), "visible": np.stack(visible), "positions": np.stack(positions)}


class LocalisationHead:
    """Per-token linear readout ``hidden -> objects x (visible logit, x, y, z)`` and its loss."""

    def __init__(self, hidden: int, device):
        import torch

        self.linear = torch.nn.Linear(hidden, len(OBJECTS) * 4).to(device)

    def __call__(self, tokens, batch: int):
        return self.linear(tokens).view(batch, -1, len(OBJECTS), 4)

    @staticmethod
    def loss(pred, visible, positions):
        """BCE on visibility (positives up-weighted: most cells are empty) + MSE of the object's
        position, on the cells where it is visible."""
        import torch.nn.functional as F

        logits, where = pred[..., 0], pred[..., 1:]
        weight = 1.0 + 4.0 * visible
        bce = F.binary_cross_entropy_with_logits(logits, visible, weight=weight)
        error = ((where - positions[:, None]) ** 2).sum(-1)
        mse = (error * visible).sum() / visible.sum().clamp_min(1.0)
        return bce + mse, bce, mse


def vision_tokens(visual, image_processor, frames, device):
    """The merged image tokens ``(B * tokens, hidden)`` of a batch of frames."""
    pixel_values, grid = image_processor(frames)
    return visual(pixel_values.to(device), grid_thw=grid.to(device)).pooler_output


def evaluate(visual, head, image_processor, data: dict, device, batch: int = 128) -> dict:
    """Held-out cell F1 of visibility and the mean position error (cm) where visible, for the
    palette objects together and for the gripper."""
    import torch

    tp = fp = fn = 0
    errors = {"objects": [], "gripper": []}
    with torch.no_grad():
        for start in range(0, len(data["images"]), batch):
            frames = data["images"][start : start + batch]
            pred = head(vision_tokens(visual, image_processor, frames, device), len(frames)).cpu()
            visible = torch.from_numpy(data["visible"][start : start + batch])
            positions = torch.from_numpy(data["positions"][start : start + batch])
            said = pred[..., 0] > 0
            tp += int((said & visible).sum())
            fp += int((said & ~visible).sum())
            fn += int((~said & visible).sum())
            distance = (pred[..., 1:3] - positions[:, None, :, :2]).norm(dim=-1) * POSITION_SCALE * 100
            errors["objects"].append(distance[..., :-1][visible[..., :-1]])
            errors["gripper"].append(distance[..., -1][visible[..., -1]])
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    result = {"cell_f1": f1}
    for kind, values in errors.items():
        values = torch.cat(values)
        result[f"{kind}_xy_error_cm"] = float(values.mean()) if len(values) else float("nan")
    return result


class LocalisationRetention:
    """Vision pretraining's loss, kept on the tower while ``vla_rl.sft --localisation_weight``
    clones it: a fresh per-token head (trained with the policy, not saved) reads every palette
    object's visibility and position, and the gripper's, from the tower's merged image tokens of
    noisy-expert frames recorded here (:func:`record`, on the cloned tasks' training seeds), with a
    held-out set to report."""

    def __init__(self, vla_path: str, model, tasks: list[str], episodes: int, image_size: int, seed: int, camera: str):
        import torch

        from vla_rl.qwen.processor import QwenImageProcessor

        self.visual = model.model.visual
        self.device = next(model.parameters()).device
        self.image_processor = QwenImageProcessor.from_pretrained(vla_path)
        cell = self.image_processor.patch_size * self.image_processor.merge_size
        started = time.perf_counter()
        args = (image_size, cell)
        self.data = record(tasks, episodes, *args, seed, 0.15, 1000, camera)
        self.heldout = record(tasks, max(2, episodes // 10), *args, seed_ranges.HELDOUT + seed, 0.15, 1000, camera)
        print(
            f"localisation retention: {len(self.data['images'])} frames of {episodes} noisy-expert episodes per task "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        self.head = LocalisationHead(model.config.get_text_config().hidden_size, self.device)
        self.visible = torch.from_numpy(self.data["visible"]).float()
        self.positions = torch.from_numpy(self.data["positions"])

    def parameters(self):
        return self.head.linear.parameters()

    def loss(self, rng, batch: int):
        index = rng.integers(0, len(self.data["images"]), batch)
        tokens = vision_tokens(self.visual, self.image_processor, self.data["images"][index], self.device)
        pred = self.head(tokens, len(index))
        loss, _, _ = LocalisationHead.loss(
            pred, self.visible[index].to(self.device), self.positions[index].to(self.device)
        )
        return loss

    def heldout_figures(self) -> dict:
        """Held-out cell F1 and mean xy errors (cm) of the head on the cloned tower."""
        return evaluate(self.visual, self.head, self.image_processor, self.heldout, self.device)


def pretrain_vision(config: VisionPretrainConfig, progress: bool = True) -> dict:
    """Train the vision tower of ``config.vla_path``; the checkpoint with it goes to ``config.out``."""
    import torch
    from tqdm import tqdm

    from vla_rl.atomic import atomic_directory
    from vla_rl.qwen.loading import load_model, read_checkpoint_config
    from vla_rl.qwen.processor import QwenImageProcessor

    config.validate()
    read_checkpoint_config(config.vla_path, "--vla_path")
    image_processor = QwenImageProcessor.from_pretrained(config.vla_path)
    cell = image_processor.patch_size * image_processor.merge_size
    frame = view_frame_shape(config.image_size, config.camera)[:2]
    if image_processor.target_size(*frame) != frame:
        raise ValueError(f"--image_size {config.image_size} must be a multiple of {cell} px for this checkpoint.")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    start = time.perf_counter()
    args = (config.image_size, cell)
    options = {"action_noise": config.action_noise, "max_steps": config.max_steps, "camera": config.camera}
    train = record(config.tasks, config.episodes, *args, config.seed, **options)
    heldout = record(config.tasks, config.heldout_episodes, *args, seed_ranges.HELDOUT + config.seed, **options)
    record_s = time.perf_counter() - start
    print(f"recorded {len(train['images'])} training and {len(heldout['images'])} held-out frames in {record_s:.0f} s")
    model = load_model(config.vla_path, "--vla_path", device="auto", dtype="float32")
    device = next(model.parameters()).device
    visual = model.model.visual
    head = LocalisationHead(model.config.get_text_config().hidden_size, device)
    parameters = list(visual.parameters()) + list(head.linear.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.01)
    warmup = min(100, config.steps // 10 + 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / config.steps)),
    )
    before = evaluate(visual, head, image_processor, heldout, device)
    visual.train()
    visible_all = torch.from_numpy(train["visible"]).float()
    positions_all = torch.from_numpy(train["positions"])
    bar = tqdm(range(config.steps), desc="vision pretraining", unit="step", disable=not progress, dynamic_ncols=True)
    ema = None
    for step in bar:
        index = rng.integers(0, len(train["images"]), config.batch_size)
        pred = head(vision_tokens(visual, image_processor, train["images"][index], device), len(index))
        loss, bce, mse = LocalisationHead.loss(pred, visible_all[index].to(device), positions_all[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.98 * ema + 0.02 * value
        if step % 50 == 0:
            bar.set_postfix(loss=f"{ema:.3f}", bce=f"{bce.item():.3f}", mse=f"{mse.item():.3f}")
    bar.close()
    visual.eval()
    after = evaluate(visual, head, image_processor, heldout, device)
    summary = {
        "config": asdict(config),
        "train_frames": len(train["images"]),
        "heldout_frames": len(heldout["images"]),
        "heldout_before": before,
        "heldout_after": after,
        "final_loss": ema,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    with atomic_directory(config.out, config.overwrite) as tmp:
        for name in os.listdir(config.vla_path):
            source = os.path.join(config.vla_path, name)
            if os.path.isfile(source) and not name.endswith(".safetensors"):
                shutil.copy2(source, os.path.join(tmp, name))
        model.save_pretrained(tmp)
        with open(os.path.join(tmp, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def pretrained_view(path: str) -> tuple[int, str] | None:
    """(frame side, camera) the vision tower of checkpoint ``path`` was pretrained on, or None
    where ``path`` holds no ``vision_pretrain.json``."""
    summary = os.path.join(path, SUMMARY_FILE)
    if not os.path.isfile(summary):
        return None
    with open(summary) as f:
        config = json.load(f)["config"]
    return int(config["image_size"]), str(config["camera"])


def main(argv: list[str] | None = None) -> int:
    defaults = VisionPretrainConfig(vla_path="", out="")
    parser = argparse.ArgumentParser(
        prog="python -m vla_rl.vision_pretrain",
        description="Pretrain the vision tower of a small Qwen2-VL checkpoint on simulator-labelled object positions.",
    )
    parser.add_argument("--vla_path", required=True, help="input checkpoint directory (e.g. from vla_rl.qwen.build)")
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument("--tasks", nargs="+", default=list(defaults.tasks), help="tasks whose scenes to render")
    parser.add_argument("--episodes", type=int, default=defaults.episodes, help="training episodes per task")
    parser.add_argument(
        "--heldout_episodes", type=int, default=defaults.heldout_episodes, help="held-out episodes per task"
    )
    parser.add_argument("--image_size", type=int, default=defaults.image_size, help="frame side in pixels")
    parser.add_argument(
        "--camera",
        default=defaults.camera,
        help=f"camera of the frames ({' | '.join(keys.VIEWS)}; wrist alone: positions in the camera's frame)",
    )
    parser.add_argument("--action_noise", type=float, default=defaults.action_noise, help="expert action noise std")
    parser.add_argument("--max_steps", type=int, default=defaults.max_steps, help="frames per episode at most")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps")
    parser.add_argument("--batch_size", type=int, default=defaults.batch_size, help="frames per step")
    parser.add_argument("--learning_rate", type=float, default=defaults.learning_rate, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of episodes, batches and init")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    config = VisionPretrainConfig(**{**vars(args), "tasks": tuple(args.tasks)})
    try:
        config.validate()
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = pretrain_vision(config)
    print(json.dumps({"heldout_before": summary["heldout_before"], "heldout_after": summary["heldout_after"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
