"""MuJoCo manipulation tasks for vla-rl, registered as Gymnasium environments.

Importing this package registers the ids and picks the offscreen OpenGL backend
(``MUJOCO_GL``); MuJoCo itself loads when an env is made::

    import gymnasium as gym
    import envs  # registers VLARL/*
    env = gym.make("VLARL/PickPlace-v0", image_size=128)
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from envs.rendering import configure_gl_backend

# Choose the offscreen OpenGL backend now, before anything imports mujoco, so that every
# MuJoCo env rendered in this process (ours, Gymnasium's, Meta-World's) works headless.
configure_gl_backend()

# Short task name -> (Gymnasium id, entry point, step limit).
TASKS: dict[str, tuple[str, str, int]] = {
    "reach": ("VLARL/Reach-v0", "envs.tasks:ReachEnv", 60),
    "push": ("VLARL/Push-v0", "envs.tasks:PushEnv", 120),
    "pick_place": ("VLARL/PickPlace-v0", "envs.tasks:PickPlaceEnv", 120),
    "stack": ("VLARL/Stack-v0", "envs.tasks:StackEnv", 120),
}
ENV_IDS = tuple(env_id for env_id, _, _ in TASKS.values())

for _env_id, _entry_point, _limit in TASKS.values():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, max_episode_steps=_limit)

# Meta-World v3 tasks under the same contract (needs `pip install .[metaworld]`).
METAWORLD_ID = "VLARL/MetaWorld-v0"
if METAWORLD_ID not in registry:
    register(id=METAWORLD_ID, entry_point="envs.metaworld_adapter:MetaWorldEnv", max_episode_steps=200)


def task_id(name: str) -> str:
    """Gymnasium id of a task given its short name (``"pick_place"``) or its id."""
    if name in TASKS:
        return TASKS[name][0]
    if name in ENV_IDS:
        return name
    raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)} or {list(ENV_IDS)}.")


def task_name(env_id: str) -> str:
    """Short name of a built-in task given its Gymnasium id (other ids come back unchanged)."""
    for name, (task_env_id, _, _) in TASKS.items():
        if task_env_id == env_id:
            return name
    return env_id


def task_class(name: str) -> type:
    """The env class of a built-in task (short name or id), imported without making an env."""
    import importlib

    module, _, attribute = TASKS[task_name(task_id(name))][1].partition(":")
    return getattr(importlib.import_module(module), attribute)


def make_vector_env(task: str, num_envs: int, asynchronous: bool = True, context: str = "spawn", **env_kwargs):
    """A Gymnasium vector env of ``num_envs`` copies of a task (short name or id).

    Asynchronous envs start their workers with ``context`` ("spawn" by default): forking a
    process that already holds an OpenGL context (it rendered something) can hang the child.
    ``env_kwargs`` go to each env (e.g. ``image_size=128``).
    """
    import gymnasium as gym

    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    if asynchronous:
        return gym.make_vec(
            task_id(task), num_envs, vectorization_mode="async", vector_kwargs={"context": context}, **env_kwargs
        )
    return gym.make_vec(task_id(task), num_envs, vectorization_mode="sync", **env_kwargs)


def sub_env_info(infos: dict, index: int) -> dict:
    """The info dict of sub-env ``index`` from a Gymnasium vector env's batched infos
    (arrays per key, with ``_key`` masks for keys that only some sub-envs reported)."""
    return {
        key: value[index]
        for key, value in infos.items()
        if not key.startswith("_") and (f"_{key}" not in infos or infos[f"_{key}"][index])
    }
