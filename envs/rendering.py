"""Offscreen OpenGL backend selection and a small MuJoCo camera renderer.

MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` once, when ``mujoco`` is first imported.
Headless machines need ``egl`` (Mesa llvmpipe or a GPU) or ``osmesa``; the default (GLFW)
fails without a display. :func:`configure_gl_backend` must therefore run before the first
``import mujoco`` — ``envs.base`` calls it at import time.
"""

from __future__ import annotations

import atexit
import ctypes.util
import os
import sys
import weakref

import numpy as np

_HEADLESS_BACKENDS = {
    # backend: (shared library to look for, Debian packages that provide it)
    "egl": ("EGL", "libegl1 libgl1-mesa-dri"),
    "osmesa": ("OSMesa", "libosmesa6"),
}


class RenderBackendError(RuntimeError):
    """No usable offscreen OpenGL backend; the message names the package to install."""


def _install_hint() -> str:
    return (
        "Install one offscreen OpenGL backend: `apt-get install libegl1 libgl1-mesa-dri` (EGL) "
        "or `apt-get install libosmesa6` (OSMesa), or run `bash scripts/setup.sh`."
    )


def configure_gl_backend() -> str:
    """Set ``MUJOCO_GL`` (egl, else osmesa) unless the user already chose one; return it.

    Raises:
        RenderBackendError: neither library is installed and no backend was chosen.
    """
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        return chosen
    for backend, (library, _packages) in _HEADLESS_BACKENDS.items():
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            if "mujoco" in sys.modules:
                _switch_loaded_mujoco(backend)
            return backend
    raise RenderBackendError(f"No offscreen OpenGL library (libEGL or libOSMesa) was found. {_install_hint()}")


def _switch_loaded_mujoco(backend: str) -> None:
    """mujoco was imported before MUJOCO_GL was set and chose an on-screen context class;
    point ``mujoco.gl_context`` (read when a ``mujoco.Renderer`` is created) at the headless one."""
    import importlib

    import mujoco.gl_context

    try:
        module = importlib.import_module(f"mujoco.{backend}")
    except ImportError as exc:
        raise RenderBackendError(
            f"mujoco was imported before MUJOCO_GL was set and switching it to {backend} failed ({exc}). "
            f"Set MUJOCO_GL={backend} in the environment before starting Python."
        ) from exc
    mujoco.gl_context.GLContext = module.GLContext


def view_cameras(view: str) -> list[str]:
    """The cameras of a view name: ``"front"`` is one camera, ``"front+wrist"`` two side by side."""
    return view.split("+")


def view_frame_shape(side: int, view: str) -> tuple[int, int, int]:
    """``(H, W, 3)`` of a view's frames: each camera ``side`` square, side by side."""
    return side, side * len(view_cameras(view)), 3


class CameraRenderer:
    """Renders one named camera of a model to uint8 RGB with shadows and reflections off; a view
    of several cameras joined by ``+`` (``"front+wrist"``) is their frames side by side, each
    ``width`` wide.

    The underlying ``mujoco.Renderer`` (and its GL context) is created on first use, so an
    environment can be constructed, pickled into a worker, and only then render.
    """

    _live: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, model, height: int, width: int, camera: str):
        CameraRenderer._live.add(self)
        self._model = model
        self._height = height
        self._width = width
        self._camera = camera
        self._renderer = None

    _exit_hook_registered = False

    def _make(self):
        import mujoco

        try:
            renderer = mujoco.Renderer(self._model, self._height, self._width)
        except Exception as exc:  # GL failures surface as several exception types
            backend = os.environ.get("MUJOCO_GL", "<unset>")
            raise RenderBackendError(
                f"Could not create an offscreen MuJoCo renderer with MUJOCO_GL={backend}: {exc}. "
                f"{_install_hint()} To try the other backend, set MUJOCO_GL=osmesa or MUJOCO_GL=egl."
            ) from exc
        if not CameraRenderer._exit_hook_registered:  # after the first context made the display
            atexit.register(_close_live_renderers)
            CameraRenderer._exit_hook_registered = True
        return renderer

    def render(self, data, segmentation: bool = False):
        """Return ``(H, W, 3) uint8`` RGB, or ``(H, W, 2) int32`` (object id, type) if segmentation."""
        import mujoco

        if self._renderer is None:
            self._renderer = self._make()
        renderer = self._renderer
        frames = []
        for camera in view_cameras(self._camera):
            renderer.update_scene(data, camera=camera)
            flags = renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            if segmentation:
                renderer.enable_segmentation_rendering()
                try:
                    frames.append(renderer.render())
                finally:
                    renderer.disable_segmentation_rendering()
            else:
                frames.append(renderer.render())
        return frames[0] if len(frames) == 1 else np.concatenate(frames, axis=1)

    def close(self) -> None:
        """Free the GL context explicitly (OSMesa leaks it otherwise)."""
        if self._renderer is not None:
            try:
                self._renderer.close()
            finally:
                self._renderer = None


def _close_live_renderers() -> None:
    """Free GL contexts of envs nobody closed while EGL/OSMesa still work (freeing them during
    interpreter teardown prints EGL errors). Registered after mujoco's GL module, whose own
    exit hook (registered when the first context is made) terminates the display, so that —
    exit hooks run last-in first-out — it runs first."""
    for renderer in list(CameraRenderer._live):
        try:
            renderer.close()
        except Exception:
            pass
