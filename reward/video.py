"""Annotated rollout videos: every frame beside a panel with the PRM's judgement.

Each saved episode is an mp4 (imageio-ffmpeg, H.264) whose frames show the camera image, a
panel (instruction, step, action, env reward, PRM score, PRM reward, cumulative return,
success) and a strip plotting the PRM score over time up to the current frame. Videos are
encoded on a background thread; a failure to write one is logged and never raised.

* :class:`RecordAnnotatedVideo` — a wrapper for single envs;
* :class:`VectorRecordAnnotatedVideo` — the same for Gymnasium vector envs (next-step autoreset);
* :func:`write_episode_video` — the writer, for trainers that keep their own rollout buffers.
"""

from __future__ import annotations

import logging
import os
import re
import textwrap
from concurrent.futures import ThreadPoolExecutor

import cv2
import gymnasium as gym
import numpy as np

from envs import sub_env_info
from vla_rl import keys

logger = logging.getLogger("vla_rl.video")

VIEW = 256  # camera image side in the video, pixels
PANEL = 256  # panel width
STRIP = 80  # score strip height
INSET = 128  # side of the PRM's own frame, in a column right of the panel (when it has another camera)
INSET_TOP = 24  # its top edge, under its label
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, GREY, GREEN, RED, AMBER = (240, 240, 240), (150, 150, 150), (60, 200, 90), (230, 70, 60), (240, 180, 40)


def _text(canvas, text: str, y: int, colour=WHITE, x: int = 10, scale: float = 0.45) -> None:
    cv2.putText(canvas, text, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)


def _panel(step: dict, instruction: str, length: int, threshold: float) -> np.ndarray:
    panel = np.full((VIEW, PANEL, 3), 28, np.uint8)
    y = 20
    for line in textwrap.wrap(instruction, 30)[:3]:
        _text(panel, line, y, AMBER)
        y += 18
    y += 6
    _text(panel, f"step {step['t']} / {length}", y)
    action = step.get("action")
    if action is not None:
        a = np.asarray(action, float)
        _text(panel, "xyz " + " ".join(f"{v:+.2f}" for v in a[:3]), y + 20, GREY)
        if len(a) >= 7:
            _text(panel, "rpy " + " ".join(f"{v:+.2f}" for v in a[3:6]) + f"  g {a[6]:+.1f}", y + 38, GREY)
    y += 62
    score = step.get("score")
    _text(panel, f"env reward  {step.get('env_reward', 0.0):+.3f}", y)
    if score is None or not np.isfinite(score):
        _text(panel, "PRM score   -", y + 20)
    else:
        colour = GREEN if score >= threshold else RED
        _text(panel, f"PRM score   {score:.3f}", y + 20, colour)
        cv2.rectangle(panel, (150, y + 10), (150 + int(96 * score), y + 22), colour, -1)
        cv2.rectangle(panel, (150, y + 10), (246, y + 22), GREY, 1)
    _text(panel, f"PRM reward  {step.get('prm_reward', 0.0):+.4f}", y + 40)
    _text(panel, f"return      {step.get('return', 0.0):+.3f}", y + 60)
    success = bool(step.get("success", False))
    _text(panel, "SUCCESS" if success else "not done", y + 88, GREEN if success else GREY, scale=0.6)
    return panel


def _strip(scores: np.ndarray, upto: int, threshold: float, width: int = VIEW + PANEL) -> np.ndarray:
    strip = np.full((STRIP, width, 3), 18, np.uint8)
    left, right, top, bottom = 40, width - 10, 8, STRIP - 12
    _text(strip, "PRM", 14, GREY, x=4, scale=0.4)
    cv2.rectangle(strip, (left, top), (right, bottom), (70, 70, 70), 1)
    y_threshold = int(bottom - threshold * (bottom - top))
    cv2.line(strip, (left, y_threshold), (right, y_threshold), (90, 90, 90), 1)
    count = max(len(scores) - 1, 1)
    xs = left + np.arange(len(scores)) * (right - left) / count
    valid = np.isfinite(scores)
    ys = bottom - np.where(valid, scores, 0.0) * (bottom - top)
    points = np.stack([xs, ys], 1)[: upto + 1][valid[: upto + 1]].astype(np.int32)
    if len(points) > 1:
        cv2.polylines(strip, [points], False, AMBER, 2, cv2.LINE_AA)
    if len(points):
        cv2.circle(strip, tuple(int(v) for v in points[-1]), 4, WHITE, -1)
    return strip


def _width(frame, height: int) -> int:
    """The width of ``frame`` scaled to ``height`` rows, its aspect kept."""
    return round(height * frame.shape[1] / frame.shape[0])


def _fit(frame, height: int) -> np.ndarray:
    """``frame`` scaled to ``height`` rows, its aspect kept (a two-camera view stays twice as wide)."""
    width = _width(frame, height)
    interpolation = cv2.INTER_NEAREST if frame.shape[0] <= height // 2 else cv2.INTER_AREA
    return cv2.resize(np.asarray(frame, np.uint8), (width, height), interpolation=interpolation)


def compose_frames(
    frames: np.ndarray, steps: list[dict], instruction: str, threshold: float = 0.5, insets: np.ndarray | None = None
) -> np.ndarray:
    """``(T+1, VIEW+STRIP, VIEW+PANEL, 3) uint8`` annotated frames (``VIEW+PANEL+INSET`` wide with
    ``insets``; a view ``k`` times wider than high, as two cameras side by side, is ``k·VIEW``
    wide, and an inset likewise).

    Args:
        frames: ``(T+1, H, W, 3)`` camera frames; frame 0 is the reset frame.
        steps: ``T+1`` dicts with ``t`` and optionally ``action``, ``env_reward``, ``score``,
            ``prm_reward``, ``return``, ``success`` (entry 0 describes the reset frame).
        insets: ``(T+1, h, w, 3)`` frames of another camera — the PRM's, where it scores the
            wrist camera's view — drawn ``INSET`` px wide in a column right of the panel, so that
            nothing of the policy's view is covered.
    """
    if len(frames) != len(steps):
        raise ValueError(f"{len(frames)} frames but {len(steps)} step records.")
    if insets is not None and len(insets) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(insets)} inset frames.")
    scores = np.array([np.nan if s.get("score") is None else s["score"] for s in steps], float)
    view = _width(frames[0], VIEW)
    column = 0 if insets is None else _width(insets[0], INSET)
    out = np.full((len(frames), VIEW + STRIP, view + PANEL + column, 3), 18, np.uint8)
    length = len(frames) - 1
    for t, (frame, step) in enumerate(zip(frames, steps, strict=True)):
        out[t, :VIEW, :view] = _fit(frame, VIEW)
        out[t, :VIEW, view : view + PANEL] = _panel(step, instruction, length, threshold)
        out[t, VIEW:, : view + PANEL] = _strip(scores, t, threshold, view + PANEL)
        if insets is not None:
            right = out[t, :VIEW, view + PANEL :]
            right[:] = 28
            _text(right, "PRM view", 16, GREY, x=4, scale=0.4)
            right[INSET_TOP : INSET_TOP + INSET] = _fit(insets[t], INSET)
    return out


def write_episode_video(
    path: str,
    frames: np.ndarray,
    steps: list[dict],
    instruction: str,
    fps: int = 10,
    threshold: float = 0.5,
    insets: np.ndarray | None = None,
) -> str:
    """Compose and write one annotated episode to ``path`` (.mp4), atomically (``insets``: see
    :func:`compose_frames`)."""
    import imageio.v2 as imageio

    video = compose_frames(frames, steps, instruction, threshold, insets)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.mp4"
    try:
        imageio.mimwrite(tmp, list(video), fps=fps, codec="libx264", macro_block_size=16, quality=7)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def video_name(index: int, task: str, success: bool) -> str:
    """File name carrying the episode index, the task and the outcome."""
    task = re.sub(r"[^A-Za-z0-9_.-]+", "-", task).strip("-") or "task"
    return f"episode{index:05d}_{task}_{'success' if success else 'fail'}.mp4"


class VideoSaver:
    """Chooses episodes (every N-th, at most M) and writes them on a background thread.

    Args:
        folder: output directory.
        every: save every N-th finished episode (1: all).
        max_videos: stop after this many (None: no limit).
        fps: frames per second.
        threshold: the PRM threshold drawn in the score strip.
    """

    def __init__(
        self, folder: str, every: int = 1, max_videos: int | None = None, fps: int = 10, threshold: float = 0.5
    ):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        if max_videos is not None and max_videos < 0:
            raise ValueError(f"max_videos must be >= 0 or None, got {max_videos}.")
        if fps < 1:
            raise ValueError(f"fps must be >= 1, got {fps}.")
        self.folder, self.every, self.max_videos, self.fps, self.threshold = folder, every, max_videos, fps, threshold
        self.episodes = 0  # finished episodes seen
        self.saved: list[str] = []  # paths submitted for writing
        self.failed: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-writer")
        self._futures = []

    def wants(self) -> bool:
        """Whether the episode that just finished should be saved."""
        index = self.episodes
        self.episodes += 1
        under_limit = self.max_videos is None or len(self.saved) < self.max_videos
        return under_limit and index % self.every == 0

    def finish(self, episode: _Episode, task: str, success: bool) -> None:
        """An episode ended: queue it if it is chosen. Never raises (videos must not stop training)."""
        try:
            if self.wants():
                self.submit(episode.frames, episode.steps, episode.instruction, task, success)
        except Exception as error:
            logger.warning("could not queue a video: %s: %s", type(error).__name__, error)

    def submit(
        self, frames: list, steps: list[dict], instruction: str, task: str, success: bool, insets: list | None = None
    ) -> str:
        """Write one episode in the background (``insets``: the PRM's frames of another camera,
        see :func:`compose_frames`); returns the video's path."""
        path = os.path.join(self.folder, video_name(self.episodes - 1, task, success))
        self.saved.append(path)
        insets = None if insets is None else np.stack(insets)
        future = self._pool.submit(
            write_episode_video, path, np.stack(frames), steps, instruction, self.fps, self.threshold, insets
        )
        future.add_done_callback(lambda f, p=path: self._done(f, p))
        self._futures.append(future)
        return path

    def _done(self, future, path: str) -> None:
        error = future.exception()
        if error is not None:
            self.failed.append(path)
            logger.warning("could not write video %s: %s: %s", path, type(error).__name__, error)

    def flush(self) -> None:
        """Wait for pending videos."""
        for future in self._futures:
            future.exception()
        self._futures = []

    def close(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)


def _step_record(t: int, info: dict, action, env_reward: float, total: float) -> dict:
    return {
        "t": t,
        "action": None if action is None else np.asarray(action, float).copy(),
        "env_reward": float(info.get(keys.ENV_REWARD, env_reward)),
        "score": None if keys.PRM_SCORE not in info else float(info[keys.PRM_SCORE]),
        "prm_reward": float(info.get(keys.PRM_REWARD, 0.0)),
        "return": total,
        "success": bool(info.get(keys.SUCCESS, False)),
    }


def _task_name(env) -> str:
    unwrapped = getattr(env, "unwrapped", env)
    return getattr(unwrapped, "task_name", "") or (env.spec.id if getattr(env, "spec", None) else "task")


class _Episode:
    """Frames and step records of one episode in progress."""

    def __init__(self, frame, info: dict, instruction: str):
        self.frames = [np.asarray(frame, np.uint8).copy()]
        self.steps = [_step_record(0, info, None, 0.0, 0.0)]
        self.instruction = instruction
        self.total = 0.0

    def add(self, frame, info: dict, action, reward: float) -> None:
        self.total += float(reward)
        self.frames.append(np.asarray(frame, np.uint8).copy())
        self.steps.append(_step_record(len(self.steps), info, action, reward, self.total))


class RecordAnnotatedVideo(gym.Wrapper):
    """Saves chosen episodes of a single env as annotated mp4 files (see :class:`VideoSaver`).

    Place it outside ``RewardWrapper`` so that the PRM entries of ``info`` are available.
    """

    def __init__(
        self,
        env: gym.Env,
        folder: str,
        every: int = 1,
        max_videos: int | None = None,
        fps: int = 10,
        threshold: float = 0.5,
    ):
        super().__init__(env)
        self.saver = VideoSaver(folder, every, max_videos, fps, threshold)
        self._episode: _Episode | None = None

    def _frame(self, observation):
        if isinstance(observation, dict) and keys.IMAGE in observation:
            return observation[keys.IMAGE]
        return self.env.render()

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        instruction = str(info.get(keys.INSTRUCTION, getattr(self.env.unwrapped, "instruction", "")))
        self._episode = _Episode(self._frame(observation), info, instruction)
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        if self._episode is not None:
            self._episode.add(self._frame(observation), info, action, reward)
            if terminated or truncated:
                self._finish(bool(info.get(keys.SUCCESS, terminated)))
        return observation, reward, terminated, truncated, info

    def _finish(self, success: bool) -> None:
        episode, self._episode = self._episode, None
        self.saver.finish(episode, _task_name(self.env), success)

    def close(self):
        self.saver.close()
        super().close()


class VectorRecordAnnotatedVideo(gym.vector.VectorWrapper):
    """Saves chosen episodes of every sub-env of a vector env (next-step autoreset)."""

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        folder: str,
        every: int = 1,
        max_videos: int | None = None,
        fps: int = 10,
        threshold: float = 0.5,
    ):
        super().__init__(env)
        self.saver = VideoSaver(folder, every, max_videos, fps, threshold)
        self._episodes: list[_Episode | None] = [None] * self.num_envs
        self._task = _task_name(env)

    def _begin(self, i: int, observations, infos) -> None:
        info = sub_env_info(infos, i)
        self._episodes[i] = _Episode(observations[keys.IMAGE][i], info, str(info.get(keys.INSTRUCTION, "")))

    def reset(self, **kwargs):
        observations, infos = self.env.reset(**kwargs)
        for i in range(self.num_envs):
            self._begin(i, observations, infos)
        return observations, infos

    def step(self, actions):
        observations, rewards, terminated, truncated, infos = self.env.step(actions)
        for i in range(self.num_envs):
            episode = self._episodes[i]
            if episode is None:  # this step reset sub-env i (next-step autoreset)
                self._begin(i, observations, infos)
                continue
            info = sub_env_info(infos, i)
            episode.add(observations[keys.IMAGE][i], info, actions[i], rewards[i])
            if terminated[i] or truncated[i]:
                self._episodes[i] = None
                self.saver.finish(episode, self._task, bool(info.get(keys.SUCCESS, terminated[i])))
        return observations, rewards, terminated, truncated, infos

    def close(self, **kwargs):
        self.saver.close()
        return super().close(**kwargs)
