"""Offscreen backend selection."""

import os
import subprocess
import sys

import pytest

from envs import rendering


def test_user_choice_is_kept(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert rendering.configure_gl_backend() == "osmesa"


def test_missing_libraries_name_the_packages(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(rendering.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(rendering.RenderBackendError, match="libegl1 libgl1-mesa-dri.*libosmesa6"):
        rendering.configure_gl_backend()


def _render_in_subprocess(env_vars: dict, prelude: str = "") -> subprocess.CompletedProcess:
    code = prelude + (
        "import gymnasium as gym, envs, os\n"
        "env = gym.make('VLARL/Reach-v0', image_size=32)\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert obs['image'].any()\n"
        "env.close()\n"
        "print(os.environ['MUJOCO_GL'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(env_vars)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_backend_is_chosen_automatically():
    result = _render_in_subprocess({})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("egl", "osmesa")


def test_mujoco_imported_first_still_renders_headless():
    result = _render_in_subprocess({}, prelude="import mujoco\n")
    assert result.returncode == 0, result.stderr
