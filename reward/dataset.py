"""Read and check process-reward-model datasets written by :mod:`reward.data`.

A row is one frame::

    episode, frame, image (path relative to the dataset), task, instruction, seed, source,
    episode_success, episode_max_progress, success, progress,
    completion (0/1), completion_token ("+"/"-"), milestone (0/1), step,
    he (+1/-1), he_token, se (in [-1, 1]), se_token
    optional (expert datasets): gripper [x, y, z] (the TCP, metres), colour_positions (one
    [x, y, z] or null per palette colour: where the object of that colour is; the grounding loss)

Every problem (missing file, malformed line, bad label, missing image) raises ``ValueError`` or
``FileNotFoundError`` naming the file, the line and the fix, before any training starts.
"""

from __future__ import annotations

import json
import os

from vla_rl import keys
from vla_rl.versioned import read_versioned_json

FORMAT_VERSION = 1
META_FILE = "meta.json"
SPLITS = ("train", "validation")
ROW_FIELDS = (
    "episode",
    "frame",
    "image",
    "task",
    "instruction",
    "seed",
    "source",
    "episode_success",
    "success",
    "progress",
    "completion",
    "completion_token",
    "milestone",
    "step",
    "he",
    "he_token",
    "se",
    "se_token",
)


def read_meta(directory: str) -> dict:
    """``meta.json`` of a PRM dataset directory, checked for the format version."""
    path = os.path.join(directory, META_FILE)
    return read_versioned_json(
        path,
        FORMAT_VERSION,
        f"{path} not found: {directory!r} is not a PRM dataset "
        f"(build one with `python -m reward.data --out {directory}`).",
    )


def check_row(row: dict, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``row`` is a well-formed labelled frame."""
    missing = [name for name in ROW_FIELDS if name not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}.")
    if row["completion"] not in (0, 1):
        raise ValueError(f"{where}: completion must be 0 or 1, got {row['completion']!r}.")
    if row["he"] not in (-1, 1, -1.0, 1.0):
        raise ValueError(f"{where}: he must be +1 or -1, got {row['he']!r}.")
    if not isinstance(row["se"], (int, float)) or not -1.0 <= row["se"] <= 1.0:
        raise ValueError(f"{where}: se must be a number in [-1, 1], got {row['se']!r}.")
    for name, value in (("completion", row["completion"]), ("he", row["he"]), ("se", row["se"])):
        token = row[f"{name}_token"]
        if token not in ("+", "-"):
            raise ValueError(f"{where}: {name}_token must be '+' or '-', got {token!r}.")
        if (token == "+") != (value > 0):
            raise ValueError(f"{where}: {name}_token {token!r} disagrees with {name}={value!r}.")
    if not isinstance(row["instruction"], str) or not row["instruction"]:
        raise ValueError(f"{where}: instruction must be a non-empty string.")
    if "gripper" in row and not _is_point(row["gripper"]):
        raise ValueError(f"{where}: gripper must be [x, y, z], got {row['gripper']!r}.")
    if "colour_positions" in row:
        positions = row["colour_positions"]
        if not isinstance(positions, list) or not all(p is None or _is_point(p) for p in positions):
            raise ValueError(f"{where}: colour_positions must be a list of [x, y, z] or null per palette colour.")


def _is_point(value) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)


def load_rows(directory: str, split: str, check_images: bool = True) -> list[dict]:
    """All rows of one split, checked; ``row["image_path"]`` is the absolute image path."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    read_meta(directory)
    path = os.path.join(directory, f"{split}.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: the dataset has no {split} split (rebuild it with reward.data).")
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object per line.")
            check_row(row, where)
            row["image_path"] = os.path.join(directory, row["image"])
            if check_images and not os.path.isfile(row["image_path"]):
                raise FileNotFoundError(f"{where}: image {row['image']!r} is missing from {directory}.")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no rows.")
    return rows


def episode_key(row: dict) -> str:
    """Which episode a loaded row belongs to, unique across datasets loaded together (episode
    numbers restart in each dataset directory)."""
    path = row.get("image_path", "")
    return f"{path[: len(path) - len(row['image'])] if path else ''}#{row['episode']}"


def episodes_of(rows: list[dict]) -> dict[int, list[dict]]:
    """Rows grouped by episode, each list in frame order."""
    grouped: dict[int, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["episode"], []).append(row)
    for frames in grouped.values():
        frames.sort(key=lambda r: r["frame"])
    return grouped


def load_image(path: str):
    """``(H, W, 3) uint8`` RGB frame."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def merged_meta(directories: list[str]) -> dict:
    """The metadata of one or more datasets trained on together: their common image size and camera and,
    per split and task, the union of their initial-state seeds (the held-out check of
    ``reward.evaluate_prm`` reads them)."""
    if not directories:
        raise ValueError("--data needs at least one dataset directory.")
    metas = [read_meta(d) for d in directories]
    common = {}  # what every frame must share: the side and the camera it was rendered at
    for key, default, flag, what in (
        ("image_size", None, "--image_size", "image sizes"),
        ("camera", keys.FRONT_CAMERA, "--camera", "cameras"),
    ):
        values = {d: m.get(key, default) for d, m in zip(directories, metas, strict=True)}
        if len(set(values.values())) > 1:
            raise ValueError(
                f"--data datasets have different {what} {values}; build them with the same {flag} "
                "(python -m reward.data)."
            )
        common[key] = next(iter(values.values()))
    seeds: dict[str, dict[str, set[int]]] = {}
    for meta in metas:
        for split, per_task in meta.get("seeds", {}).items():
            for task, values in per_task.items():
                seeds.setdefault(split, {}).setdefault(task, set()).update(values)
    sorted_seeds = {split: {task: sorted(v) for task, v in per_task.items()} for split, per_task in seeds.items()}
    return {**common, "seeds": sorted_seeds}
