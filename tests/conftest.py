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
