"""The built-in tasks. Each names objects by colour, so the instruction decides what to do.

Progress (``info["progress"]``) is a function of privileged simulator state built from the
task's stages; it is below 1 until the success step and exactly 1.0 there.
"""

from __future__ import annotations

import numpy as np

from envs.base import ManipulationEnv
from envs.scene import BLOCK_HALF, PALETTE, Blocks, approach, sample_colours, sample_points

PROGRESS_CAP = 0.99  # progress never reaches 1 without success


class _BlockTask(ManipulationEnv):
    """Common parts of tasks whose objects are three coloured blocks (plus fixed fixtures)."""

    num_blocks = 3

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = Blocks(self.model, self.data, self.num_blocks)
        self.target_block = 0  # index of the block the instruction names

    @property
    def target_block_pos(self) -> np.ndarray:
        return self.blocks.pos(self.target_block)

    def named_positions(self) -> np.ndarray:
        """World positions ``(2, 3)`` of what the instruction names: the block, then where it
        goes (the block again for reach). Privileged; demonstrations record it for auxiliary
        training targets."""
        return np.stack([self.target_block_pos, self._destination()]).astype(np.float32)

    def _destination(self) -> np.ndarray:
        return self.target_block_pos

    def coloured_objects(self) -> list[tuple[str, list[int], np.ndarray]]:
        """Every object an instruction can name: ``(colour, geom ids, world position (3,))``.
        Privileged; the vision pretraining (:mod:`vla_rl.vision_pretrain`) learns from it."""
        pairs = zip(self.blocks.colours, self.blocks.geoms, strict=True)
        return [(colour, [geom], self.blocks.pos(i)) for i, (colour, geom) in enumerate(pairs)]

    def grasped(self, block: int) -> bool:
        """Both fingers touch the block."""
        left, right = self.touching(self.blocks.geoms[block])
        return left and right

    def _placement_progress(self, placed: bool, goal: np.ndarray, start_xy: float, reach: float) -> tuple[bool, float]:
        """``(success, progress)`` of carrying the named block to ``goal`` (its centre when
        placed); success once it is ``placed`` and neither finger touches it.

        Stages: reach the block (0 to 0.3), grasp (0.4), carry over the goal (to 0.8),
        lower onto it (to 0.9), let go (1.0).
        """
        block = self.target_block
        left, right = self.touching(self.blocks.geoms[block])
        if placed and not (left or right):
            return True, 1.0
        if placed and not (left and right):
            return False, 0.9
        pos = self.blocks.pos(block)
        if left and right:
            d_xy = float(np.linalg.norm(pos[:2] - goal[:2]))
            carry = approach(d_xy, start_xy, 0.01)
            lower = approach(abs(pos[2] - goal[2]), 0.12, 0.005) if d_xy < 0.03 else 0.0
            return False, PROGRESS_CAP * (0.4 + 0.4 * carry + 0.1 * lower)
        return False, PROGRESS_CAP * 0.3 * approach(float(np.linalg.norm(self.tcp_pos - pos)), reach, 0.01)


class ReachEnv(_BlockTask):
    """Touch a named block: bring the gripper's fingertips to the top of it."""

    xml_file = "reach.xml"
    task_name = "reach"
    tolerance = 0.025
    success_needs_gripper = True

    def _sample_scene(self, rng):
        colours = sample_colours(rng, self.num_blocks)
        self.blocks.place(rng, sample_points(rng, self.num_blocks, 0.09), colours)
        self.target_block = int(rng.integers(self.num_blocks))
        self.instruction = self.instruction_for(self.target_block)

    def instruction_for(self, block: int) -> str:
        """The instruction that names ``block`` in this scene."""
        return f"touch the {self.blocks.colours[block]} block"

    def goal(self, block: int | None = None) -> np.ndarray:
        """TCP position that counts as touching (the named block, or ``block``): 1 cm above
        the block's top face."""
        pos = self.target_block_pos if block is None else self.blocks.pos(block)
        return pos + np.array([0.0, 0.0, BLOCK_HALF + 0.01])

    def goal_distance(self) -> float:
        """How far the TCP is from :meth:`goal`; success is this under ``tolerance``."""
        return float(np.linalg.norm(self.tcp_pos - self.goal()))

    def _on_reset(self):
        self._start = self.goal_distance()

    def _evaluate(self):
        distance = self.goal_distance()
        if distance < self.tolerance:
            return True, 1.0
        return False, PROGRESS_CAP * approach(distance, self._start, self.tolerance)


class PushEnv(_BlockTask):
    """Push a named block onto a named flat target pad, keeping it on the table."""

    xml_file = "push.xml"
    task_name = "push"
    num_pads = 3
    tolerance = 0.03  # block centre within this of the pad centre
    pusher_offset = 0.05  # TCP distance behind the block centre when pushing

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pad_mocap = [int(self.model.body_mocapid[self.model.body(f"pad{i}").id]) for i in range(self.num_pads)]
        self.pad_geoms = [self.model.geom(f"pad{i}").id for i in range(self.num_pads)]
        self.target_pad = 0

    def _sample_scene(self, rng):
        colours = sample_colours(rng, self.num_blocks + self.num_pads)
        pads = sample_points(rng, self.num_pads, 0.13)
        avoid = [(p, 0.09) for p in pads]
        self.target_block = int(rng.integers(self.num_blocks))
        self.target_pad = int(rng.integers(self.num_pads))
        blocks = sample_points(rng, self.num_blocks, 0.08, avoid=avoid + [(pads[self.target_pad], 0.12)])
        self.blocks.place(rng, blocks, colours[: self.num_blocks])
        for i, point in enumerate(pads):
            self.data.mocap_pos[self.pad_mocap[i]] = (point[0], point[1], 0.0)
            self.model.geom_rgba[self.pad_geoms[i]] = PALETTE[colours[self.num_blocks + i]]
        self.pad_colours = colours[self.num_blocks :]
        self.instruction = self.instruction_for(self.target_block, self.target_pad)

    def instruction_for(self, block: int, pad: int) -> str:
        """The instruction that names ``block`` and ``pad`` in this scene."""
        return f"push the {self.blocks.colours[block]} block onto the {self.pad_colours[pad]} target"

    @property
    def target_pad_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self.pad_mocap[self.target_pad]].copy()

    def _destination(self) -> np.ndarray:
        return self.target_pad_pos

    def coloured_objects(self):
        triples = zip(self.pad_colours, self.pad_geoms, self.pad_mocap, strict=True)
        pads = [(colour, [geom], self.data.mocap_pos[mocap].copy()) for colour, geom, mocap in triples]
        return super().coloured_objects() + pads

    def push_direction(self) -> np.ndarray:
        """Unit (2,) vector from the block to the pad."""
        delta = self.target_pad_pos[:2] - self.target_block_pos[:2]
        return delta / max(np.linalg.norm(delta), 1e-6)

    def pusher_point(self, direction: np.ndarray | None = None) -> np.ndarray:
        """Where the TCP should be to push the block along ``direction`` (default: at the pad)."""
        direction = self.push_direction() if direction is None else direction
        xy = self.target_block_pos[:2] - direction * self.pusher_offset
        return np.array([xy[0], xy[1], BLOCK_HALF])

    def _distances(self) -> tuple[float, float]:
        """Block-to-pad distance, and TCP distance to the pushing position behind the block.

        The pushing position uses the block-to-pad direction at reset, so that steering
        (pushing a little off-centre as the block turns) does not count as losing progress."""
        block_to_pad = float(np.linalg.norm(self.target_block_pos[:2] - self.target_pad_pos[:2]))
        tcp_to_pusher = float(np.linalg.norm(self.tcp_pos - self.pusher_point(self._start_direction)))
        return block_to_pad, tcp_to_pusher

    def goal_distance(self) -> float:
        """How far the named block's centre is from the named pad's (horizontally); success is
        this under ``tolerance`` with the block on the table."""
        return self._distances()[0]

    def _on_reset(self):
        self._start_direction = self.push_direction()
        self._start_push, self._start_reach = self._distances()

    def _evaluate(self):
        block_to_pad, tcp_to_pusher = self._distances()
        if block_to_pad < self.tolerance and self.target_block_pos[2] < BLOCK_HALF + 0.01:
            return True, 1.0
        reach = approach(tcp_to_pusher, self._start_reach, 0.03)
        push = approach(block_to_pad, self._start_push, self.tolerance)
        return False, PROGRESS_CAP * (0.3 * reach + 0.7 * push)


class PickPlaceEnv(_BlockTask):
    """Pick a named block and place it in a named tray (released, resting inside)."""

    xml_file = "pick_place.xml"
    task_name = "pick_place"
    num_trays = 2
    inner_half = 0.06  # inside half-width of a tray
    floor = 0.008  # tray floor height

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tray_mocap = [int(self.model.body_mocapid[self.model.body(f"tray{i}").id]) for i in range(self.num_trays)]
        self.tray_geoms = [
            [g for g in range(self.model.ngeom) if self.model.geom_bodyid[g] == self.model.body(f"tray{i}").id]
            for i in range(self.num_trays)
        ]
        self.target_tray = 0

    def _sample_scene(self, rng):
        colours = sample_colours(rng, self.num_blocks + self.num_trays)
        trays = sample_points(rng, self.num_trays, 0.2, low=np.array([-0.17, -0.16]), high=np.array([0.17, 0.08]))
        blocks = sample_points(rng, self.num_blocks, 0.09, avoid=[(t, 0.17) for t in trays])
        self.blocks.place(rng, blocks, colours[: self.num_blocks])
        for i, point in enumerate(trays):
            self.data.mocap_pos[self.tray_mocap[i]] = (point[0], point[1], 0.0)
            for g in self.tray_geoms[i]:
                self.model.geom_rgba[g] = PALETTE[colours[self.num_blocks + i]]
        self.tray_colours = colours[self.num_blocks :]
        self.target_block = int(rng.integers(self.num_blocks))
        self.target_tray = int(rng.integers(self.num_trays))
        self.instruction = (
            f"put the {colours[self.target_block]} block in the {self.tray_colours[self.target_tray]} tray"
        )

    def coloured_objects(self):
        trays = [
            (colour, list(geoms), self.data.mocap_pos[mocap].copy())
            for colour, geoms, mocap in zip(self.tray_colours, self.tray_geoms, self.tray_mocap, strict=True)
        ]
        return super().coloured_objects() + trays

    def place_goal(self) -> np.ndarray:
        """Block centre when resting in the middle of the named tray."""
        tray = self.data.mocap_pos[self.tray_mocap[self.target_tray]]
        return np.array([tray[0], tray[1], self.floor + BLOCK_HALF])

    def _destination(self) -> np.ndarray:
        return self.place_goal()

    def _inside(self) -> bool:
        pos, goal = self.target_block_pos, self.place_goal()
        return bool(np.max(np.abs(pos[:2] - goal[:2])) < self.inner_half - 0.005 and pos[2] < goal[2] + 0.01)

    def _on_reset(self):
        self._start_xy = float(np.linalg.norm(self.target_block_pos[:2] - self.place_goal()[:2]))
        self._start_reach = float(np.linalg.norm(self.tcp_pos - self.target_block_pos))

    def _evaluate(self):
        return self._placement_progress(self._inside(), self.place_goal(), self._start_xy, self._start_reach)


class StackEnv(_BlockTask):
    """Stack a named block on another named block (released, resting on top)."""

    xml_file = "stack.xml"
    task_name = "stack"

    def _sample_scene(self, rng):
        colours = sample_colours(rng, self.num_blocks)
        self.blocks.place(rng, sample_points(rng, self.num_blocks, 0.09), colours)
        top, base = rng.choice(self.num_blocks, size=2, replace=False)
        self.target_block, self.base_block = int(top), int(base)
        self.instruction = f"stack the {colours[self.target_block]} block on the {colours[self.base_block]} block"

    def place_goal(self) -> np.ndarray:
        """Top block centre when resting squarely on the base block."""
        return self.blocks.pos(self.base_block) + np.array([0.0, 0.0, 2 * BLOCK_HALF])

    def _destination(self) -> np.ndarray:
        return self.place_goal()

    def _stacked(self) -> bool:
        top, goal = self.target_block_pos, self.place_goal()
        base_on_table = self.blocks.pos(self.base_block)[2] < BLOCK_HALF + 0.005
        return bool(base_on_table and np.linalg.norm(top[:2] - goal[:2]) < 0.02 and abs(top[2] - goal[2]) < 0.01)

    def _on_reset(self):
        self._start_xy = float(np.linalg.norm(self.target_block_pos[:2] - self.place_goal()[:2]))
        self._start_reach = float(np.linalg.norm(self.tcp_pos - self.target_block_pos))

    def _evaluate(self):
        return self._placement_progress(self._stacked(), self.place_goal(), self._start_xy, self._start_reach)
