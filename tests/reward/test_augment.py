"""Colour permutation (reward.augment) on rendered frames, and in the PRM training dataset."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.scene import COLOUR_NAMES
from reward.augment import SATURATED, _hsv, permute_positions, recolour, rename_colours
from reward.prm_trainer import FrameDataset


def _nearest_colour_counts(image: np.ndarray) -> np.ndarray:
    """Saturated pixels per palette colour (by nearest palette hue)."""
    from reward.augment import _PALETTE_HUE

    hue, saturation, _ = _hsv(image.astype(np.float32) / 255.0)
    distance = np.abs(hue[..., None] - _PALETTE_HUE)
    nearest = np.minimum(distance, 1.0 - distance).argmin(-1)
    return np.bincount(nearest[saturation > 0.5], minlength=len(COLOUR_NAMES))


@pytest.fixture(scope="module")
def frame():
    env = gym.make(envs.task_id("push"), image_size=64)
    observation, info = env.reset(seed=7)
    env.close()
    return observation["image"], info["instruction"]


def swap(a: str, b: str) -> np.ndarray:
    permutation = np.arange(len(COLOUR_NAMES))
    i, j = COLOUR_NAMES.index(a), COLOUR_NAMES.index(b)
    permutation[i], permutation[j] = j, i
    return permutation


def test_identity_leaves_the_frame_exactly_as_it_was(frame):
    image, _ = frame
    np.testing.assert_array_equal(recolour(image, np.arange(len(COLOUR_NAMES))), image)


def test_a_swap_moves_the_named_objects_pixels_to_the_other_colour_and_nothing_else(frame):
    image, instruction = frame
    named = next(c for c in COLOUR_NAMES if c in instruction.split())
    absent = next(
        c
        for c in COLOUR_NAMES
        if c not in instruction.split() and _nearest_colour_counts(image)[COLOUR_NAMES.index(c)] == 0
    )
    before = _nearest_colour_counts(image)
    out = recolour(image, swap(named, absent))
    after = _nearest_colour_counts(out)
    i, j = COLOUR_NAMES.index(named), COLOUR_NAMES.index(absent)
    assert before[i] > 5 and before[j] == 0
    assert after[i] == 0 and abs(int(after[j]) - int(before[i])) <= 2
    _, saturation, _ = _hsv(image.astype(np.float32) / 255.0)
    grey = saturation <= SATURATED  # table, arm and gripper are left untouched
    np.testing.assert_array_equal(out[grey], image[grey])


def test_words_and_positions_follow_the_permutation():
    permutation = swap("red", "cyan")
    assert rename_colours("push the red block onto the cyan target", permutation) == (
        "push the cyan block onto the red target"
    )
    assert rename_colours("touch the reddish thing", permutation) == "touch the reddish thing"  # whole words only
    positions = [[float(k), 0.0, 0.0] if k in (0, 2) else None for k in range(len(COLOUR_NAMES))]
    moved = permute_positions(positions, permutation)
    assert moved[COLOUR_NAMES.index("cyan")] == [0.0, 0.0, 0.0] and moved[0] is None
    assert moved[2] == [2.0, 0.0, 0.0]


def test_the_training_dataset_renames_and_moves_positions_together(tmp_path, frame):
    from PIL import Image

    image, _ = frame
    path = str(tmp_path / "frame.png")
    Image.fromarray(image).save(path)
    yellow = COLOUR_NAMES.index("yellow")
    row = {
        "image_path": path,
        "instruction": "touch the yellow block",
        "completion": 1,
        "progress": 1.0,
        "colour_positions": [[0.1, 0.2, 0.02] if k == yellow else None for k in range(len(COLOUR_NAMES))],
        "gripper": [0.1, 0.2, 0.05],
    }
    plain = FrameDataset([row], "completion", 0.0, "{instruction}?", grounding=True)
    assert plain[0]["prompt"] == "touch the yellow block?" and plain[0]["target"] == 1.0
    augmented = FrameDataset([row], "completion", 0.0, "{instruction}?", grounding=True, colour_permutation=1.0)
    named = set()
    for _ in range(20):
        item = augmented[0]
        colour = item["prompt"].split()[2]
        named.add(colour)
        assert item["target"] == 1.0
        assert item["colour_positions"][COLOUR_NAMES.index(colour)] == [0.1, 0.2, 0.02]
        assert sum(not np.isnan(p[0]) for p in item["colour_positions"]) == 1
    assert len(named) >= 4  # the named colour varies from draw to draw
