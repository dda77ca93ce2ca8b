"""Render one picture per built-in task (first frame, with its instruction) for the README.

.venv/bin/python scripts/render_task_gallery.py [--out assets/docs] [--seed 3] [--size 256]
"""

from __future__ import annotations

import argparse
import os

import cv2
import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

import envs


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """The image with a white band underneath carrying ``text``."""
    band = np.full((28, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([image, band], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("assets", "docs"))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in envs.TASKS:
        env = gym.make(envs.task_id(name), image_size=args.size)
        obs, info = env.reset(seed=args.seed)
        path = os.path.join(args.out, f"{name}.png")
        imageio.imwrite(path, caption(obs["image"], info["instruction"]))
        env.close()
        print(f"{path}: {info['instruction']}")


if __name__ == "__main__":
    main()
