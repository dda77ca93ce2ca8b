"""Annotated videos of training episodes (``--save_video True``), from the rollout buffers."""

from __future__ import annotations

import numpy as np

from vla_rl import keys


class EpisodeVideos:
    """Annotated videos of training episodes, built from the rollout buffers after the PRM
    scored them (so deferred scoring still puts the PRM score of every frame on screen). With
    ``inset``, the PRM's own frames (another camera's) are drawn beside the policy's view."""

    def __init__(self, folder: str, tasks: list[str], every: int, max_videos: int, threshold: float, inset=False):
        from reward.video import VideoSaver

        self.saver = VideoSaver(folder, every=every, max_videos=max_videos, threshold=threshold)
        self.tasks = tasks
        self.inset = inset
        self.current: list[dict | None] = [None] * len(tasks)

    def add(self, batch, last_observations: dict, actions: np.ndarray) -> None:
        """Add ``batch``'s steps; ``last_observations``: the env's observations after its last step."""
        T, N = batch.valid.shape
        insets = self.inset and batch.prm_images is not None
        last_images = last_observations[keys.IMAGE]
        for t in range(T):
            for i in range(N):
                if not batch.valid[t, i]:
                    continue
                episode = self.current[i]
                if episode is None:
                    episode = self.current[i] = {
                        "frames": [batch.images[t, i]],
                        "instruction": batch.instructions[t][i],
                        "steps": [{"t": 0}],
                        "total": 0.0,
                        "insets": [batch.prm_images[t, i]] if insets else None,
                    }
                frame = batch.images[t + 1, i] if t + 1 < T else last_images[i]
                if insets:
                    after = batch.prm_images[t + 1, i] if t + 1 < T else last_observations[keys.PRM_IMAGE][i]
                    episode["insets"].append(after)
                reward = float(batch.env_rewards[t, i] + batch.prm_rewards[t, i])
                episode["total"] += reward
                done = bool(batch.terminated[t, i] or batch.truncated[t, i])
                score = batch.prm_scores[t, i]
                episode["frames"].append(frame)
                episode["steps"].append(
                    {
                        "t": len(episode["steps"]),
                        "action": actions[t, i],
                        "env_reward": float(batch.env_rewards[t, i]),
                        "score": None if not np.isfinite(score) else float(score),
                        "prm_reward": float(batch.prm_rewards[t, i]),
                        "return": episode["total"],
                        "success": bool(batch.terminated[t, i]),
                    }
                )
                if done:
                    self.current[i] = None
                    if self.saver.wants():
                        self.saver.submit(
                            episode["frames"],
                            episode["steps"],
                            episode["instruction"],
                            self.tasks[i],
                            bool(batch.terminated[t, i]),
                            episode["insets"],
                        )

    def close(self) -> None:
        self.saver.close()
