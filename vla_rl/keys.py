"""Dictionary keys shared across ``envs``, ``reward`` and ``vla_rl`` — defined once, here."""

# Observation keys.
IMAGE = "image"
STATE = "state"

# Per-step info keys written by the environments.
INSTRUCTION = "instruction"
SUCCESS = "success"
PROGRESS = "progress"
SIM_ERROR = "sim_error"
