"""Colour permutation: a label-preserving augmentation for PRM training on the palette tasks.

Whether "touch the yellow block" is completed depends on the geometry of the scene and on which
object the colour word names, not on which colours the palette drew. Recolouring every palette
object by a permutation of the palette, and renaming the colour words of the instruction by the
same permutation, gives a frame with the same completion label and progress, and a colour
pairing the dataset may never have shown (the gripper on the orange block while the instruction
names the yellow one is then as often red vs purple, blue vs cyan, ...). It makes the PRM learn
the relation between the named object and the gripper rather than the gripper's pose alone.

Pixels are assigned to a palette colour by hue where they are saturated (the table, arm and
gripper are grey or beige); each keeps its shading (its value relative to the palette colour's),
and edge pixels, where an object blends with the table, are recoloured in proportion to their
saturation.
"""

from __future__ import annotations

import re

import numpy as np

from envs.scene import COLOUR_NAMES, PALETTE

SATURATED = 0.2  # below this saturation a pixel is table, arm or gripper and is left as it is
_COLOUR_WORDS = re.compile(r"\b(" + "|".join(COLOUR_NAMES) + r")\b")


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in [0, 1), saturation and value of float RGB in [0, 1] (last axis)."""
    top, bottom = rgb.max(-1), rgb.min(-1)
    spread = np.maximum(top - bottom, 1e-6)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.where(top == r, ((g - b) / spread) % 6, np.where(top == g, (b - r) / spread + 2, (r - g) / spread + 4))
    saturation = np.where(top > 0, (top - bottom) / np.maximum(top, 1e-6), 0.0)
    return hue / 6.0, saturation, top


_PALETTE_RGB = np.array([PALETTE[name][:3] for name in COLOUR_NAMES], np.float32)
_PALETTE_HUE, _PALETTE_SAT, _PALETTE_VALUE = _hsv(_PALETTE_RGB)


def recolour(image: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with every palette colour ``k`` redrawn as ``permutation[k]``."""
    rgb = image.astype(np.float32) / 255.0
    hue, saturation, value = _hsv(rgb)
    distance = np.abs(hue[..., None] - _PALETTE_HUE)
    nearest = np.minimum(distance, 1.0 - distance).argmin(-1)
    shade = (value / _PALETTE_VALUE[nearest])[..., None]
    before = _PALETTE_RGB[nearest] * shade
    after = _PALETTE_RGB[np.asarray(permutation)[nearest]] * shade
    weight = np.clip(saturation / _PALETTE_SAT[nearest], 0.0, 1.0)[..., None] * (saturation > SATURATED)[..., None]
    out = rgb + weight * (after - before)
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colour_words(text: str) -> list[str]:
    """The palette colour words of ``text``, in order (an instruction names its object first)."""
    return _COLOUR_WORDS.findall(text)


def rename_colours(text: str, permutation: np.ndarray) -> str:
    """``text`` with every palette colour word ``COLOUR_NAMES[k]`` replaced by ``COLOUR_NAMES[permutation[k]]``."""
    return _COLOUR_WORDS.sub(lambda m: COLOUR_NAMES[permutation[COLOUR_NAMES.index(m.group(1))]], text)


def permute_positions(positions: list, permutation: np.ndarray) -> list:
    """Per-palette-colour positions (indexed like ``COLOUR_NAMES``) after the permutation: the
    object drawn in colour ``k`` is now drawn in ``permutation[k]``."""
    out = [None] * len(positions)
    for k, position in enumerate(positions):
        out[int(permutation[k])] = position
    return out
