"""Dictionary keys shared across ``envs``, ``reward`` and ``vla_rl`` — defined once, here."""

# Observation keys.
IMAGE = "image"
STATE = "state"
PRM_IMAGE = "prm_image"  # the frame at the PRM's own size or from its camera, where they differ from the policy's

# Cameras of the built-in scenes (assets/mjcf): the policy's view, and the eye-in-hand view.
FRONT_CAMERA = "front"
WRIST_CAMERA = "wrist"
CAMERAS = (FRONT_CAMERA, WRIST_CAMERA)
# Views an observation can have: one camera, or both side by side (LIBERO's agent view + eye in hand).
FRONT_WRIST = f"{FRONT_CAMERA}+{WRIST_CAMERA}"
VIEWS = (*CAMERAS, FRONT_WRIST)

# Per-step info keys written by the environments.
INSTRUCTION = "instruction"
SUCCESS = "success"
PROGRESS = "progress"
SIM_ERROR = "sim_error"

# Per-step info keys written by the reward wrappers.
ENV_REWARD = "env_reward"
PRM_SCORE = "prm_score"
PRM_REWARD = "prm_reward"

# Per-step info key of the Ray env workers: the sub-env's worker died, its episode is dropped.
DROPPED = "dropped"

# Reset info key of ``envs.wrappers.ExpertHandover``: expert steps before the policy took over.
HANDOVER_STEPS = "handover_steps"
