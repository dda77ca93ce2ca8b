"""Scene randomisation shared by the tasks: colours, non-overlapping placements, blocks."""

from __future__ import annotations

import numpy as np

# Colour names used in instructions, with the RGBA the objects are drawn in.
PALETTE: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.12, 1.0),
    "green": (0.12, 0.62, 0.18, 1.0),
    "blue": (0.12, 0.28, 0.90, 1.0),
    "yellow": (0.95, 0.82, 0.08, 1.0),
    "purple": (0.55, 0.18, 0.75, 1.0),
    "orange": (1.00, 0.50, 0.05, 1.0),
    "cyan": (0.10, 0.78, 0.85, 1.0),
}
COLOUR_NAMES = tuple(PALETTE)

BLOCK_HALF = 0.02  # half edge of the cubes, metres
OBJECT_LOW = np.array([-0.22, -0.24])  # x, y range where objects are placed
OBJECT_HIGH = np.array([0.22, 0.14])
MAX_BLOCK_YAW = np.pi / 4


class PlacementError(RuntimeError):
    """Rejection sampling found no layout (constraints too tight for the table)."""


def sample_colours(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct colour names."""
    picks = rng.choice(len(COLOUR_NAMES), size=count, replace=False)
    return [COLOUR_NAMES[i] for i in picks]


def sample_points(
    rng: np.random.Generator,
    count: int,
    min_gap: float,
    low: np.ndarray = OBJECT_LOW,
    high: np.ndarray = OBJECT_HIGH,
    avoid: list[tuple[np.ndarray, float]] = (),
    tries: int = 2000,
) -> np.ndarray:
    """``(count, 2)`` points in the box, pairwise at least ``min_gap`` apart and at least the
    given distance from each ``(point, distance)`` in ``avoid``."""
    points: list[np.ndarray] = []
    for _ in range(tries):
        candidate = rng.uniform(low, high)
        if any(np.linalg.norm(candidate - p) < min_gap for p in points):
            continue
        if any(np.linalg.norm(candidate - p) < gap for p, gap in avoid):
            continue
        points.append(candidate)
        if len(points) == count:
            return np.array(points)
    raise PlacementError(f"could not place {count} objects {min_gap} m apart in {tries} tries")


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation about world z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quat_yaw(quat: np.ndarray) -> float:
    """Yaw about world z of a quaternion (w, x, y, z), assuming the object stands upright."""
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def grasp_yaw(quat: np.ndarray) -> float:
    """The yaw in [-pi/4, pi/4] that aligns the fingers with a cube's faces (cube symmetry)."""
    yaw = quat_yaw(quat)
    return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)


class Blocks:
    """The free cubes ``block0..blockN-1`` of a scene: placement, colour, pose queries."""

    def __init__(self, model, data, count: int):
        self.model, self.data = model, data
        self.geoms = [model.geom(f"block{i}").id for i in range(count)]
        self.bodies = [model.body(f"block{i}").id for i in range(count)]
        self.qpos = [model.joint(f"block{i}").qposadr[0] for i in range(count)]
        self.colours: list[str] = []

    def __len__(self) -> int:
        return len(self.geoms)

    def place(self, rng: np.random.Generator, xy: np.ndarray, colours: list[str]) -> None:
        """Put block i upright on the table at ``xy[i]`` with a random yaw, coloured ``colours[i]``."""
        self.colours = list(colours)
        for i, (point, colour) in enumerate(zip(xy, colours, strict=False)):
            adr = self.qpos[i]
            self.data.qpos[adr : adr + 3] = (point[0], point[1], BLOCK_HALF)
            self.data.qpos[adr + 3 : adr + 7] = yaw_quat(rng.uniform(-MAX_BLOCK_YAW, MAX_BLOCK_YAW))
            self.model.geom_rgba[self.geoms[i]] = PALETTE[colour]

    def pos(self, i: int) -> np.ndarray:
        """Centre of block i (3,), metres."""
        return self.data.xpos[self.bodies[i]].copy()

    def quat(self, i: int) -> np.ndarray:
        return self.data.xquat[self.bodies[i]].copy()


def clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def approach(distance: float, start: float, tolerance: float) -> float:
    """Fraction of the way from ``start`` to within ``tolerance``: 0 at start, 1 within tolerance."""
    span = max(start - tolerance, 1e-3)
    return clip01(1.0 - (distance - tolerance) / span)
