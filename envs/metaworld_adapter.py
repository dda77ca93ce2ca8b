"""Meta-World v3 tasks behind the vla-rl observation/info contract.

``pip install .[metaworld]`` (Meta-World 3.x, which pins MuJoCo 3.3). The adapter turns a
Meta-World single-task env into: ``obs = {"image": uint8 HxWx3, "state": float32 (4,)}``
(hand position and gripper opening), 7-D actions in the built-in tasks' convention
(``[dx, dy, dz, droll, dpitch, dyaw, gripper]``; Meta-World's hand does not rotate, so the
rotation entries are ignored), ``info["instruction"]``, ``info["success"]`` and
``info["progress"]`` (from the object-to-goal distance where Meta-World reports one, else
0 until success), with the sparse success reward of the built-in tasks::

    env = gym.make("VLARL/MetaWorld-v0", task="pick-place-v3", image_size=128)
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.error import DependencyNotInstalled

from envs.base import validate_action
from envs.rendering import configure_gl_backend, view_cameras
from envs.scene import approach
from vla_rl import keys

# Instructions for common tasks; others get one made from the task name.
INSTRUCTIONS = {
    "pick-place-v3": "pick up the puck and place it at the goal",
    "reach-v3": "reach the goal position",
    "push-v3": "push the puck to the goal",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "window-open-v3": "open the window",
    "window-close-v3": "close the window",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
}
DISTANCE_KEYS = ("obj_to_target", "target_to_obj")  # reported by Meta-World's object tasks
STATE_BOUND = 5.0  # metres; Meta-World's hand stays well inside


def instruction_for(task: str) -> str:
    return INSTRUCTIONS.get(task, task.rsplit("-v", 1)[0].replace("-", " "))


class MetaWorldEnv(gym.Env):
    """One Meta-World v3 task (``task``, e.g. ``"pick-place-v3"``) with image observations.

    Args:
        task: a Meta-World v3 environment name.
        image_size: square image side in pixels (16-256).
        camera: Meta-World camera name; ``"corner"`` shows the arm, the object and the goal.
        render_mode: ``"rgb_array"`` or ``None``.
        prm_image_size: if set (16-256) and not ``image_size``, the observation also holds
            ``prm_image``, the same camera at that side, for a PRM trained at another size.
        prm_camera: only ``None`` or ``camera``: a PRM trained on another camera's frames (the
            built-in tasks' ``wrist``) has no such view here, which is refused.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str = "pick-place-v3",
        image_size: int = 128,
        camera: str = "corner",
        render_mode: str | None = "rgb_array",
        prm_image_size: int | None = None,
        prm_camera: str | None = None,
    ):
        if len(view_cameras(camera)) > 1:
            raise ValueError(
                f"camera={camera!r}: Meta-World tasks render one camera, not several side by side; use a "
                "policy cloned on one camera's frames."
            )
        if prm_camera not in (None, camera):
            raise ValueError(
                f"prm_camera={prm_camera!r}: Meta-World tasks render only their camera {camera!r}; use a PRM "
                "trained on front-camera frames (reward.data --camera front)."
            )
        configure_gl_backend()
        try:
            import metaworld  # noqa: F401  (registers the Meta-World ids)
        except ImportError as exc:
            raise DependencyNotInstalled(
                "Meta-World is not installed; run `pip install .[metaworld]` (or `pip install metaworld`)."
            ) from exc
        for name, side in (("image_size", image_size), ("prm_image_size", prm_image_size or 16)):
            if not 16 <= int(side) <= 256:
                raise ValueError(f"{name}={side} is out of range; use 16..256.")
        self.task = task
        self.image_size = int(image_size)
        self.render_mode = render_mode
        from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer
        from metaworld import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        name = f"{task}-goal-observable"
        if name not in ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE:
            names = sorted(n.removesuffix("-goal-observable") for n in ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE)
            raise ValueError(f"unknown Meta-World task {task!r}; choose one of {names}.")
        self._env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[name]()
        # Draw object and goal positions afresh at every reset from the env's seeded generator
        # (the goal-observable variants freeze them after construction).
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._env.render_mode = "rgb_array"
        self._env.mujoco_renderer = MujocoRenderer(
            self._env.model, self._env.data, width=self.image_size, height=self.image_size, camera_name=camera
        )
        # The PRM's frame, where its size differs: the same camera at that side (as the built-in tasks do).
        self.prm_image_size = None if prm_image_size in (None, self.image_size) else int(prm_image_size)
        self._prm_renderer = None
        if self.prm_image_size is not None:
            side = self.prm_image_size
            self._prm_renderer = MujocoRenderer(
                self._env.model, self._env.data, width=side, height=side, camera_name=camera
            )
        self.instruction = instruction_for(task)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        spaces = {
            keys.IMAGE: gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
            keys.STATE: gym.spaces.Box(-STATE_BOUND, STATE_BOUND, (4,), np.float32),
        }
        if self.prm_image_size is not None:
            spaces[keys.PRM_IMAGE] = gym.spaces.Box(0, 255, (self.prm_image_size, self.prm_image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self._frame: np.ndarray | None = None
        self._start_distance: float | None = None

    def _observation(self, raw: np.ndarray) -> dict:
        # Meta-World 3 renders its cameras bottom-up (OpenGL row order): flip to top-down.
        self.raw_observation = raw  # Meta-World's own 39-D vector, for its scripted policies
        if self._prm_renderer is not None:  # two GL contexts: each must be current for its own render
            _current(self._env.mujoco_renderer)
        self._frame = np.ascontiguousarray(np.flipud(self._env.render()))
        observation = {
            keys.IMAGE: self._frame.copy(),
            keys.STATE: np.clip(raw[:4], -STATE_BOUND, STATE_BOUND).astype(np.float32),
        }
        if self._prm_renderer is not None:
            _current(self._prm_renderer)
            observation[keys.PRM_IMAGE] = np.ascontiguousarray(np.flipud(self._prm_renderer.render("rgb_array")))
        return observation

    def _progress(self, info: dict, success: bool) -> float:
        if success:
            return 1.0
        for key in DISTANCE_KEYS:
            if key in info:
                distance = float(info[key])
                if self._start_distance is None:
                    self._start_distance = distance
                return 0.99 * approach(distance, self._start_distance, 0.05)
        return 0.0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        import mujoco

        inner = self._env
        if seed is not None:
            inner.seed(seed)  # Meta-World's reset() ignores its seed argument
        # Its reset settles the hand by stepping from the current state: start from the model's
        # reference state so that the result does not depend on the previous episode.
        mujoco.mj_resetData(inner.model, inner.data)
        raw, _ = inner.reset()
        mujoco.mj_forward(inner.model, inner.data)  # refresh derived poses for the first render
        self._start_distance = None
        observation = self._observation(raw)
        info = {keys.INSTRUCTION: self.instruction, keys.SUCCESS: False, keys.PROGRESS: 0.0}
        return observation, info

    def step(self, action):
        action = validate_action(action)
        native = np.concatenate([action[:3], action[6:]]).astype(np.float32)
        raw, _, _, truncated, raw_info = self._env.step(native)
        success = bool(raw_info.get("success", 0.0) > 0.5)
        info = {
            keys.INSTRUCTION: self.instruction,
            keys.SUCCESS: success,
            keys.PROGRESS: self._progress(raw_info, success),
        }
        return self._observation(raw), float(success), success, bool(truncated), info

    def render(self):
        if self.render_mode is None:
            return None
        return None if self._frame is None else self._frame.copy()

    def close(self):
        if self._prm_renderer is not None:
            self._prm_renderer.close()
        self._env.close()
        super().close()


def _current(renderer) -> None:
    """Make the GL context of a Gymnasium ``MujocoRenderer``'s offscreen viewer current (its
    ``render`` does not, so with two renderers the second would draw into the first's context)."""
    renderer._get_viewer(render_mode="rgb_array").make_context_current()
