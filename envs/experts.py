"""Scripted experts: closed-loop controllers that read privileged simulator state.

Each expert is a small phase machine over waypoints, re-planned every step from the current
object poses (so pushes that drift and grasps that slip are recovered). ``make_expert(env)``
returns the expert for any built-in task::

    expert = make_expert(env)
    obs, info = env.reset(seed=0)
    expert.reset()
    obs, reward, terminated, truncated, info = env.step(expert.act())
"""

from __future__ import annotations

import numpy as np

from envs.base import POS_STEP, ROT_STEP
from envs.scene import BLOCK_HALF, grasp_yaw
from envs.tasks import PickPlaceEnv, PushEnv, ReachEnv, StackEnv

OPEN, CLOSED = -1.0, 1.0
CRUISE_HEIGHT = 0.10  # TCP height for moving above the objects
CARRY_HEIGHT = 0.13  # TCP height while carrying a block
REACH_SLOPE = 0.5  # reach: clearance cone, metres of height above the goal per metre of horizontal distance
PUSH_SLOPE = 1.5  # push: steeper, so the TCP clears the block when it comes from the pad's side
CONE_FLAT = 0.005  # horizontal distance within which the clearance cone is flat at the goal height


class Expert:
    """Base: action helpers on top of the unwrapped task env.

    Args:
        env: a built-in task env (wrapped or not).
        action_noise: std of Gaussian noise added to every action (perturbed experts, which
            produce the failures and near-misses that reward-model datasets need).
        seed: seed of the noise generator.
    """

    def __init__(self, env, action_noise: float = 0.0, seed: int | None = None):
        if action_noise < 0 or not np.isfinite(action_noise):
            raise ValueError(f"action_noise must be a finite value >= 0, got {action_noise}.")
        self.env = env.unwrapped
        self.action_noise = action_noise
        self.rng = np.random.default_rng(seed)
        self.phase = 0
        self.timer = 0
        self.last_plan = np.zeros(7, np.float32)

    def reset(self) -> None:
        self.phase = 0
        self.timer = 0

    def act(self) -> np.ndarray:
        """Next action ``(7,) float32`` in [-1, 1] for the env's current state."""
        action = self._plan()
        self.last_plan = np.clip(action, -1.0, 1.0).astype(np.float32)  # the noise-free action
        if self.action_noise > 0:
            action = action + self.rng.normal(0.0, self.action_noise, size=7)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _plan(self) -> np.ndarray:
        raise NotImplementedError

    def alternatives(self) -> list[tuple[str, np.ndarray]]:
        """Counterfactual labels for the current state: ``(instruction, action)`` for other
        instructions of the same scene. None for this task (see :class:`ReachExpert`)."""
        return []

    def counterfactual_labels(self) -> list[tuple[str, np.ndarray]]:
        """The :meth:`alternatives` that demonstrations record for cloning, in the same order;
        an all-NaN action where a label is left out (default: none is)."""
        return self.alternatives()

    def _goto_phase(self, phase: int) -> None:
        self.phase, self.timer = phase, 0

    # --------------------------------------------------------------- helpers
    def _action(self, goal: np.ndarray, yaw: float, gripper: float, speed: float = 1.0) -> np.ndarray:
        """Move the TCP target towards ``goal`` at up to ``speed`` of full speed, keep the hand
        level, turn to ``yaw`` and set the gripper."""
        translate = np.clip((goal - self.env.tcp_target) / POS_STEP, -speed, speed)
        rpy = self.env.target_rpy
        rotate = np.clip((np.array([0.0, 0.0, yaw]) - rpy) / ROT_STEP, -1.0, 1.0)
        return np.concatenate([translate, rotate, [gripper]])

    def _near(self, goal: np.ndarray, tolerance: float, axes=slice(None)) -> bool:
        return bool(np.linalg.norm((self.env.tcp_pos - goal)[axes]) < tolerance)

    def _line(
        self, goal: np.ndarray, yaw: float, gripper: float, slope: float, keep_out: np.ndarray | None = None
    ) -> np.ndarray:
        """Move the TCP target on the straight line to ``goal`` (all three axes in proportion,
        the largest at full speed), but never below the cone :meth:`_floor` around it, nor lower
        than 2 cm above the top of a block at ``keep_out`` within 4.5 cm of it horizontally; keep
        the hand level, turn to ``yaw`` and set the gripper. Above the goal the line is vertical,
        so the descent needs no precise "now it is above the goal" moment."""
        step = (goal - self.env.tcp_target) / POS_STEP
        step = step / max(1.0, float(np.abs(step).max()))
        after = self.env.tcp_pos + step * POS_STEP  # where the TCP is (the target may run ahead of it)
        floor = self._floor(goal, slope, after)
        if keep_out is not None and np.linalg.norm(after[:2] - keep_out[:2]) < 0.045:
            floor = max(floor, keep_out[2] + BLOCK_HALF + 0.02)
        if self.env.tcp_target[2] + step[2] * POS_STEP < floor:
            step[2] = np.clip((floor - self.env.tcp_target[2]) / POS_STEP, -1.0, 1.0)
        rpy = self.env.target_rpy
        rotate = np.clip((np.array([0.0, 0.0, yaw]) - rpy) / ROT_STEP, -1.0, 1.0)
        return np.concatenate([step, rotate, [gripper]])

    def _floor(self, goal: np.ndarray, slope: float, point: np.ndarray | None = None) -> float:
        """Lowest height allowed at ``point`` (default: the TCP) on the way to ``goal``: a cone
        ``goal z + slope * (horizontal distance)``, capped at the cruise height, that keeps the
        TCP clear of the objects."""
        point = self.env.tcp_pos if point is None else point
        distance = float(np.linalg.norm(point[:2] - goal[:2]))
        return min(goal[2] + slope * max(0.0, distance - CONE_FLAT), max(goal[2], CRUISE_HEIGHT))


class ReachExpert(Expert):
    """Straight line to 1 cm above the named block's top face (:meth:`Expert._line`)."""

    def _plan(self):
        return self._plan_for(self.env.target_block)

    def _plan_for(self, block: int) -> np.ndarray:
        env: ReachEnv = self.env
        return self._line(env.goal(block), grasp_yaw(env.blocks.quat(block)), OPEN, REACH_SLOPE)

    def alternatives(self) -> list[tuple[str, np.ndarray]]:
        """For every block the instruction does not name: the instruction that would name it
        and the noise-free action this expert would take towards it from the current state
        (counterfactual labels: the same frame, another instruction, another action)."""
        env: ReachEnv = self.env
        out = []
        for block in range(len(env.blocks)):
            if block != env.target_block:
                action = np.clip(self._plan_for(block), -1.0, 1.0).astype(np.float32)
                out.append((env.instruction_for(block), action))
        return out


class PushExpert(Expert):
    """Closed gripper as a pusher: a straight line down to the point behind the block (above a
    cone that clears the block), push along the block-to-pad line, and back off upwards and
    re-approach whenever the block drifts off the line."""

    def _plan(self):
        action, phase = self._plan_in(self.phase)
        if phase != self.phase:
            self._goto_phase(phase)
        return action

    def _plan_in(self, phase: int) -> tuple[np.ndarray, int]:
        """The action for the named block and pad in ``phase`` (0: approach, 1: push, 2: back
        off), and the phase it leaves the expert in."""
        env: PushEnv = self.env
        direction = env.push_direction()
        yaw = float(np.arctan2(direction[1], direction[0]) + np.pi / 2)
        yaw = (yaw + np.pi / 2) % np.pi - np.pi / 2  # the two fingers are symmetric under pi
        pusher = env.pusher_point()
        if phase == 0:  # straight down to the pusher point, above the cone that clears the block
            if self._near(pusher, 0.01, slice(0, 2)) and self._near(pusher, 0.01, slice(2, 3)):
                phase = 1
            else:
                return self._line(pusher, yaw, CLOSED, PUSH_SLOPE, keep_out=env.target_block_pos), phase
        if phase == 1:  # push
            if not self._on_push_line(direction):
                phase = 2
            else:
                # Pure pursuit of a point on the block-to-pad line just behind the block: the
                # lateral part of the motion steers the block back onto the line.
                ahead = pusher[:2] + direction * 0.035
                goal = np.array([ahead[0], ahead[1], pusher[2]])
                return self._action(goal, yaw, CLOSED, speed=0.6), phase
        if phase == 2:  # back off upwards, then re-approach
            goal = np.array([env.tcp_pos[0], env.tcp_pos[1], CRUISE_HEIGHT])
            if self._near(goal, 0.01, slice(2, 3)):
                phase = 0
        return self._action(goal, yaw, CLOSED), phase

    def _on_push_line(self, direction: np.ndarray) -> bool:
        """The TCP is behind the named block on the block-to-pad line (within 3 cm of it)."""
        rel = self.env.tcp_pos[:2] - self.env.target_block_pos[:2]
        lateral = abs(rel[0] * direction[1] - rel[1] * direction[0])
        return lateral <= 0.03 and -float(rel @ direction) >= 0.015

    def alternatives(self) -> list[tuple[str, np.ndarray]]:
        """For every other (block, pad) pair: its instruction and this expert's action for it
        from the current state, the phase read from the geometry (pushing when low on that
        pair's push line, backing off when low elsewhere, else approaching)."""
        return [(text, action) for text, _, action in self._alternatives_with_phase()]

    def counterfactual_labels(self) -> list[tuple[str, np.ndarray]]:
        """:meth:`alternatives` without the back-off labels (NaN there). While the gripper is
        low behind the named block, every other pair's label is "back off upwards": eight of
        the nine labels of such a frame, which taught a cloned policy to lift off the block it
        was pushing (bench/README.md, "Push and its counterfactual labels")."""
        return [
            (text, np.full(7, np.nan, np.float32) if phase == 2 else action)
            for text, phase, action in self._alternatives_with_phase()
        ]

    def _alternatives_with_phase(self) -> list[tuple[str, int, np.ndarray]]:
        env: PushEnv = self.env
        named = env.target_block, env.target_pad
        out = []
        try:
            for block in range(len(env.blocks)):
                for pad in range(env.num_pads):
                    if (block, pad) == named:
                        continue
                    env.target_block, env.target_pad = block, pad
                    out.append((env.instruction_for(block, pad), *self._counterfactual()))
        finally:
            env.target_block, env.target_pad = named
        return out

    def _counterfactual(self) -> tuple[int, np.ndarray]:
        env: PushEnv = self.env
        height = env.tcp_pos[2]
        pusher = env.pusher_point()
        if height < BLOCK_HALF + 0.015 and self._on_push_line(env.push_direction()):
            phase = 1
        elif height < self._floor(pusher, PUSH_SLOPE) - 0.02:
            phase = 2  # well below the approach cone: away from the push line, low
        else:
            phase = 0
        return phase, np.clip(self._plan_in(phase)[0], -1.0, 1.0).astype(np.float32)


class PickAndPlaceExpert(Expert):
    """Grasp the named block from above, carry it over the goal, lower it and let go.

    Subclasses define ``goal()``: the block centre when placed."""

    def goal(self) -> np.ndarray:
        raise NotImplementedError

    def _plan(self):
        env = self.env
        index = env.target_block
        block = env.blocks.pos(index)
        yaw = grasp_yaw(env.blocks.quat(index))
        self.timer += 1
        holding = env.grasped(index)
        if self.phase in (3, 4, 5) and not holding:
            self._goto_phase(7)  # dropped: open, rise and start over
        if self.phase == 0:  # open, above the block, aligned
            goal = np.array([block[0], block[1], CRUISE_HEIGHT])
            yaw_error = abs(env.target_rpy[2] - yaw)
            if self._near(goal, 0.008, slice(0, 2)) and yaw_error < 0.05:
                self._goto_phase(1)
            return self._action(goal, yaw, OPEN)
        if self.phase == 1:  # down around the block
            goal = np.array([block[0], block[1], block[2]])
            if self._near(goal, 0.008, slice(2, 3)):
                self._goto_phase(2)
            return self._action(goal, yaw, OPEN)
        if self.phase == 2:  # close
            if self.timer >= 6:
                self._goto_phase(3 if holding else 7)
            return self._action(env.tcp_target, yaw, CLOSED)
        offset = env.tcp_pos - block  # keeps the held block, not the TCP, on the waypoints
        target = self.goal()
        if self.phase == 3:  # lift
            goal = np.array([env.tcp_pos[0], env.tcp_pos[1], CARRY_HEIGHT])
            if self._near(goal, 0.01, slice(2, 3)):
                self._goto_phase(4)
            return self._action(goal, yaw, CLOSED)
        if self.phase == 4:  # carry over the goal
            goal = np.array([target[0] + offset[0], target[1] + offset[1], CARRY_HEIGHT])
            if self._near(goal, 0.006, slice(0, 2)):
                self._goto_phase(5)
            return self._action(goal, yaw, CLOSED)
        if self.phase == 5:  # lower until the block is just above its resting place
            goal = target + offset + np.array([0.0, 0.0, 0.004])
            if abs(block[2] - target[2]) < 0.008:
                self._goto_phase(6)
            return self._action(goal, yaw, CLOSED, speed=0.6)
        if self.phase == 6:  # release
            if self.timer >= 5:
                self._goto_phase(8)
            return self._action(env.tcp_target, yaw, OPEN)
        # 7: recover (open and rise, then start over); 8: retreat upwards after the release
        goal = np.array([env.tcp_pos[0], env.tcp_pos[1], CRUISE_HEIGHT])
        if self.phase == 7 and self._near(goal, 0.01, slice(2, 3)):
            self._goto_phase(0)
        return self._action(goal, yaw, OPEN)


class PickPlaceExpert(PickAndPlaceExpert):
    def goal(self):
        env: PickPlaceEnv = self.env
        return env.place_goal()


class StackExpert(PickAndPlaceExpert):
    def goal(self):
        env: StackEnv = self.env
        return env.place_goal()


_EXPERTS = {ReachEnv: ReachExpert, PushEnv: PushExpert, PickPlaceEnv: PickPlaceExpert, StackEnv: StackExpert}


def make_expert(env, action_noise: float = 0.0, seed: int | None = None) -> Expert:
    """The scripted expert for a built-in task env."""
    for env_type, expert_type in _EXPERTS.items():
        if isinstance(env.unwrapped, env_type):
            return expert_type(env, action_noise=action_noise, seed=seed)
    raise TypeError(f"no scripted expert for {type(env.unwrapped).__name__}; built-in tasks: {list(_EXPERTS)}.")
