"""The shared MuJoCo manipulation environment: arm control, observations, rendering, safety.

Tasks (``envs.tasks``) subclass :class:`ManipulationEnv` and supply the scene randomisation,
the instruction and the privileged success/progress evaluation.

Action (the LIBERO/OpenVLA convention): 7-D ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``
in [-1, 1]. Translations move the tool-centre-point (TCP) target by up to ``POS_STEP`` metres,
rotations turn it by up to ``ROT_STEP`` radians about the world axes, and ``gripper`` sets the
finger closure (-1 open, +1 closed). The hand follows the target through a weld constraint.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import gymnasium as gym
import numpy as np

from envs.rendering import CameraRenderer, configure_gl_backend, view_cameras, view_frame_shape
from vla_rl import keys

configure_gl_backend()
import mujoco  # noqa: E402  (must follow the backend choice)

POS_STEP = 0.02  # metres of TCP motion per unit action per step
ROT_STEP = 0.10  # radians of rotation per unit action per step
FINGER_TRAVEL = 0.04  # metres each finger slides from open to closed
TCP_OFFSET = 0.085  # metres from the hand origin to the TCP, along the hand's z axis
CONTROL_SUBSTEPS = 10  # physics steps (4 ms each) per action: 25 Hz control
MAX_LEAD = 0.05  # the target may lead the measured TCP by at most this (no wind-up)
WORKSPACE_LOW = np.array([-0.32, -0.34, 0.014])
WORKSPACE_HIGH = np.array([0.32, 0.26, 0.35])
TILT_LIMIT = 0.5  # radians of roll/pitch away from pointing straight down
YAW_LIMIT = 1.6  # radians of yaw either way
HOME_TCP = np.array([0.0, -0.08, 0.22])
# Bounds of the proprioceptive state (TCP position, rotation vector, finger travel).
STATE_LOW = np.array([-2.0, -2.0, -2.0, -3.2, -3.2, -3.2, -0.02, -0.02], np.float32)
STATE_HIGH = -STATE_LOW + np.array([0, 0, 0, 0, 0, 0, 0.04, 0.04], np.float32)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 256
# Quaternion (w, x, y, z) of the hand pointing straight down: 180 degrees about world x.
DOWN_QUAT = np.array([0.0, 1.0, 0.0, 0.0])
_SIM_WARNINGS = {
    mujoco.mjtWarning.mjWARN_INERTIA: "bad inertia",
    mujoco.mjtWarning.mjWARN_CONTACTFULL: "contact buffer full",
    mujoco.mjtWarning.mjWARN_CNSTRFULL: "constraint buffer full",
    mujoco.mjtWarning.mjWARN_BADQPOS: "bad qpos (NaN/inf)",
    mujoco.mjtWarning.mjWARN_BADQVEL: "bad qvel (NaN/inf)",
    mujoco.mjtWarning.mjWARN_BADQACC: "bad qacc (unstable simulation)",
    mujoco.mjtWarning.mjWARN_BADCTRL: "bad ctrl",
}


def check_image_size(size, name: str) -> None:
    """``TypeError``/``ValueError`` naming ``name`` unless ``size`` is an int in the supported range."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(size).__name__}.")
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"{name}={size} is out of range; use {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}.")


def mjcf_path(name: str) -> str:
    """Absolute path of an MJCF file shipped in ``assets/mjcf``."""
    return str(resources.files("assets").joinpath("mjcf", name))


def quat_from_euler_world(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Quaternion of Rz(yaw) Ry(pitch) Rx(roll) applied after the straight-down orientation."""
    quat = np.empty(4)
    rotation = np.empty(4)
    for axis, angle in ((0, roll), (1, pitch), (2, yaw)):
        unit = np.zeros(3)
        unit[axis] = 1.0
        mujoco.mju_axisAngle2Quat(rotation, unit, angle)
        if axis == 0:
            mujoco.mju_mulQuat(quat, rotation, DOWN_QUAT)
        else:
            mujoco.mju_mulQuat(quat, rotation, quat.copy())
    return quat


def validate_action(action) -> np.ndarray:
    """A 7-D action as float64 clipped to [-1, 1]; wrong shapes and NaN/inf raise ValueError."""
    array = np.asarray(action, dtype=np.float64)
    if array.shape != (7,):
        raise ValueError(
            f"action must have shape (7,) = [dx, dy, dz, droll, dpitch, dyaw, gripper], got {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"action contains NaN or inf: {array.tolist()}.")
    return np.clip(array, -1.0, 1.0)


@dataclass(frozen=True)
class SceneIds:
    """Cached MuJoCo ids used every step."""

    hand: int
    tcp: int
    weld_mocap: int
    finger_qpos: np.ndarray
    finger_geoms: tuple[int, int]
    arm_qpos: np.ndarray


class ManipulationEnv(gym.Env):
    """Base class: subclasses set ``xml_file`` and implement the four task hooks.

    Args:
        render_mode: ``"rgb_array"`` (``render()`` returns the observation camera) or ``None``.
        image_size: side of the square observation image in pixels, 16-256 (default 128).
        render_obs: if False the observation image is all zeros and nothing is rendered —
            for headless data generation and physics benchmarks; ``render()`` still works.
        prm_image_size: if set (16-256) and not ``image_size``, the observation also holds
            ``"prm_image"``: the same camera rendered at this side, for a process reward model
            trained on frames of that size (the reward wrappers score it instead of ``"image"``).
        camera: the observation camera (``None``: the task's, ``"front"``); ``"wrist"`` is the
            eye-in-hand camera of ``assets/mjcf/robot.xml``; cameras joined by ``+``
            (``"front+wrist"``) give their frames side by side, each ``image_size`` square.
        prm_camera: if set and not the observation camera, ``"prm_image"`` is rendered from this
            camera (or ``+`` view; at ``prm_image_size``, else ``image_size``), for a process
            reward model trained on that camera's frames.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}
    xml_file: str = ""
    camera: str = keys.FRONT_CAMERA
    task_name: str = ""
    success_needs_gripper: bool = False  # success is the gripper's relation to the scene (ends when it leaves)

    def __init__(
        self,
        render_mode: str | None = "rgb_array",
        image_size: int = 128,
        render_obs: bool = True,
        prm_image_size: int | None = None,
        camera: str | None = None,
        prm_camera: str | None = None,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use 'rgb_array' or None.")
        check_image_size(image_size, "image_size")
        if prm_image_size is not None:
            check_image_size(prm_image_size, "prm_image_size")
        self.render_mode = render_mode
        self.image_size = int(image_size)
        self.render_obs = bool(render_obs)
        self.model = mujoco.MjModel.from_xml_path(mjcf_path(self.xml_file))
        self.data = mujoco.MjData(self.model)
        self.ids = self._lookup_ids()
        self.camera = self._check_camera(camera or self.camera, "camera")
        self.prm_camera = self._check_camera(prm_camera or self.camera, "prm_camera")
        self._renderer = CameraRenderer(self.model, self.image_size, self.image_size, self.camera)
        self.prm_image_size = None if prm_image_size in (None, image_size) else int(prm_image_size)
        self._prm_renderer = None
        spaces = {
            keys.IMAGE: gym.spaces.Box(0, 255, view_frame_shape(self.image_size, self.camera), np.uint8),
            keys.STATE: gym.spaces.Box(STATE_LOW, STATE_HIGH, dtype=np.float32),
        }
        if self.prm_image_size is not None or self.prm_camera != self.camera:
            side = self.prm_image_size or self.image_size
            self._prm_renderer = CameraRenderer(self.model, side, side, self.prm_camera)
            spaces[keys.PRM_IMAGE] = gym.spaces.Box(0, 255, view_frame_shape(side, self.prm_camera), np.uint8)
        self._home_qpos = self._solve_home()
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.instruction = ""
        self._target_pos = HOME_TCP.copy()
        self._target_rpy = np.zeros(3)
        self._frame: np.ndarray | None = None
        self._sim_error: str | None = None

    # ----------------------------------------------------------------- task hooks
    def _sample_scene(self, rng: np.random.Generator) -> None:
        """Place and colour the objects, choose the named ones and set ``self.instruction``."""
        raise NotImplementedError

    def _evaluate(self) -> tuple[bool, float]:
        """Return ``(success, progress)`` from privileged state; progress is 1.0 iff success."""
        raise NotImplementedError

    # ------------------------------------------------------------------- set-up
    def _check_camera(self, name, argument: str) -> str:
        """``name`` if the scene has a camera of that name (or each camera of a ``+`` view), else
        ``ValueError`` naming ``argument``."""
        names = [self.model.camera(i).name for i in range(self.model.ncam)]
        if not isinstance(name, str) or any(camera not in names for camera in view_cameras(name)):
            raise ValueError(
                f"{argument}={name!r} is not a camera of this scene; use one of {names}, or several joined by '+'."
            )
        return name

    def _lookup_ids(self) -> SceneIds:
        m = self.model
        arm_joints = [m.joint(f"j{i}") for i in range(1, 7)]
        fingers = [m.joint("finger_left"), m.joint("finger_right")]
        return SceneIds(
            hand=m.body("hand").id,
            tcp=m.site("tcp").id,
            weld_mocap=int(m.body_mocapid[m.body("ee_target").id]),
            finger_qpos=np.array([j.qposadr[0] for j in fingers]),
            finger_geoms=(m.geom("finger_left").id, m.geom("finger_right").id),
            arm_qpos=np.array([j.qposadr[0] for j in arm_joints]),
        )

    def _solve_home(self) -> np.ndarray:
        """Joint angles that put the TCP at ``HOME_TCP`` pointing down (damped least squares)."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self.ids.arm_qpos] = [0.0, -0.5, -1.9, -0.75, 0.0, 0.0]
        target_quat = DOWN_QUAT
        target_pos = HOME_TCP + np.array([0.0, 0.0, TCP_OFFSET])
        jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        cols = np.array([m.jnt_dofadr[m.joint(f"j{i}").id] for i in range(1, 7)])
        for _ in range(100):
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err_pos = target_pos - d.xpos[self.ids.hand]
            err_rot = np.zeros(3)
            conj, diff = np.empty(4), np.empty(4)
            mujoco.mju_negQuat(conj, d.xquat[self.ids.hand])
            mujoco.mju_mulQuat(diff, target_quat, conj)
            mujoco.mju_quat2Vel(err_rot, diff, 1.0)
            error = np.concatenate([err_pos, err_rot])
            if np.linalg.norm(error) < 1e-7:
                break
            mujoco.mj_jacBody(m, d, jacp, jacr, self.ids.hand)
            jac = np.vstack([jacp, jacr])[:, cols]
            step = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), error)
            d.qpos[self.ids.arm_qpos] += step
        return d.qpos.copy()

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[:] = self._home_qpos
        self._target_pos = HOME_TCP.copy()
        self._target_rpy = np.zeros(3)
        self._write_targets(gripper=-1.0)
        self._sample_scene(self.np_random)
        mujoco.mj_forward(m, d)
        self._sim_error = None
        self._frame = None
        self._on_reset()
        success, progress = self._evaluate()
        return self._observation(), self._info(success, progress)

    def _on_reset(self) -> None:
        """Hook for tasks that record initial distances after the scene is placed."""

    def step(self, action):
        action = validate_action(action)
        m, d = self.model, self.data
        self._target_pos = np.clip(self._target_pos + action[:3] * POS_STEP, WORKSPACE_LOW, WORKSPACE_HIGH)
        tcp = d.site_xpos[self.ids.tcp]
        self._target_pos = np.clip(self._target_pos, tcp - MAX_LEAD, tcp + MAX_LEAD)
        rpy = self._target_rpy + action[3:6] * ROT_STEP
        limits = np.array([TILT_LIMIT, TILT_LIMIT, YAW_LIMIT])
        self._target_rpy = np.clip(rpy, -limits, limits)
        self._write_targets(gripper=float(action[6]))
        warnings_before = d.warning.number.copy()
        mujoco.mj_step(m, d, nstep=CONTROL_SUBSTEPS)
        self._frame = None
        self._sim_error = self._check_simulation(warnings_before)
        if self._sim_error is not None:
            info = self._info(False, 0.0)
            info[keys.SIM_ERROR] = self._sim_error
            return self._observation(), 0.0, False, True, info
        success, progress = self._evaluate()
        return self._observation(), float(success), success, False, self._info(success, progress)

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array'.")
            return None
        return self._render_frame().copy()

    def segmentation(self) -> np.ndarray:
        """``(H, W) int32``: the geom id seen at each pixel of the observation camera, -1 where
        no geom is (privileged; for labelling what is where in the frame)."""
        import mujoco

        ids = self._renderer.render(self.data, segmentation=True)
        return np.where(ids[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), ids[..., 0], -1).astype(np.int32)

    def close(self):
        self._renderer.close()
        if self._prm_renderer is not None:
            self._prm_renderer.close()
        super().close()

    # ---------------------------------------------------------------- internals
    def _write_targets(self, gripper: float) -> None:
        quat = quat_from_euler_world(*self._target_rpy)
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, quat)
        hand_pos = self._target_pos - rot.reshape(3, 3) @ np.array([0.0, 0.0, TCP_OFFSET])
        self.data.mocap_pos[self.ids.weld_mocap] = hand_pos
        self.data.mocap_quat[self.ids.weld_mocap] = quat
        self.data.ctrl[:2] = (np.clip(gripper, -1.0, 1.0) + 1.0) * 0.5 * FINGER_TRAVEL

    def _check_simulation(self, warnings_before: np.ndarray) -> str | None:
        new = self.data.warning.number - warnings_before
        for index, label in _SIM_WARNINGS.items():
            if new[index] > 0:
                return f"MuJoCo warning: {label}"
        if not (np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel))):
            return "non-finite simulator state"
        return None

    def _render_frame(self) -> np.ndarray:
        if self._frame is None:
            self._frame = self._renderer.render(self.data)
        return self._frame

    def _observation(self) -> dict:
        spaces = self.observation_space.spaces  # blank frames (render_obs off) take their shapes
        if self.render_obs:
            image = self._render_frame().copy()
        else:
            image = np.zeros(spaces[keys.IMAGE].shape, np.uint8)
        observation = {keys.IMAGE: image, keys.STATE: self.proprio()}
        if self._prm_renderer is not None:
            if self.render_obs:
                observation[keys.PRM_IMAGE] = self._prm_renderer.render(self.data)
            else:
                observation[keys.PRM_IMAGE] = np.zeros(spaces[keys.PRM_IMAGE].shape, np.uint8)
        return observation

    def proprio(self) -> np.ndarray:
        """``(8,) float32``: TCP position (3), hand rotation away from straight-down as an
        axis-angle vector (3), left and right finger closure (2) — as in LIBERO's state."""
        d = self.data
        conj, rel = np.empty(4), np.empty(4)
        mujoco.mju_negQuat(conj, DOWN_QUAT)
        mujoco.mju_mulQuat(rel, d.xquat[self.ids.hand], conj)
        axis_angle = np.empty(3)
        mujoco.mju_quat2Vel(axis_angle, rel, 1.0)
        state = np.concatenate([d.site_xpos[self.ids.tcp], axis_angle, d.qpos[self.ids.finger_qpos]])
        state = state.astype(np.float32)
        if not np.all(np.isfinite(state)):
            state = np.nan_to_num(state, nan=0.0, posinf=0.0, neginf=0.0)
        return np.clip(state, STATE_LOW, STATE_HIGH)

    def _info(self, success: bool, progress: float) -> dict:
        return {keys.INSTRUCTION: self.instruction, keys.SUCCESS: bool(success), keys.PROGRESS: float(progress)}

    # ------------------------------------------------------ privileged accessors
    @property
    def tcp_pos(self) -> np.ndarray:
        """Measured TCP position (3,), metres."""
        return self.data.site_xpos[self.ids.tcp].copy()

    @property
    def tcp_target(self) -> np.ndarray:
        """Commanded TCP position (3,), metres."""
        return self._target_pos.copy()

    @property
    def target_rpy(self) -> np.ndarray:
        """Commanded (roll, pitch, yaw) away from straight-down, radians."""
        return self._target_rpy.copy()

    @property
    def finger_closure(self) -> float:
        """Mean finger travel as a fraction of full closure, 0 (open) .. 1 (closed)."""
        return float(self.data.qpos[self.ids.finger_qpos].mean() / FINGER_TRAVEL)

    def touching(self, geom: int) -> tuple[bool, bool]:
        """Whether the (left, right) finger is in contact with geom ``geom``."""
        n = self.data.ncon
        g1, g2 = self.data.contact.geom1[:n], self.data.contact.geom2[:n]
        left, right = self.ids.finger_geoms
        hits = (g1 == geom) | (g2 == geom)
        left_hit = bool(np.any(hits & ((g1 == left) | (g2 == left))))
        right_hit = bool(np.any(hits & ((g1 == right) | (g2 == right))))
        return left_hit, right_hit
