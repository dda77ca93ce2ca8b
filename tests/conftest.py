"""Shared fixtures. Environments render offscreen; ``envs`` picks the GL backend itself."""

import os

import pytest

# Keep each test process to one math thread: the suite runs on 2-core machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def make_env():
    """``make_env(task, **kwargs)`` -> a gymnasium env that is closed after the test."""
    import gymnasium as gym

    import envs

    made = []

    def _make(task: str, **kwargs):
        env = gym.make(envs.task_id(task), **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> str:
    """A tiny Qwen2-VL checkpoint built locally once per test session (no download)."""
    from vla_rl.qwen.build import build_checkpoint

    return build_checkpoint(str(tmp_path_factory.mktemp("models") / "qwen2vl-tiny"), preset="tiny", seed=0)
