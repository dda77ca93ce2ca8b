"""Process reward models and the wrappers that turn their scores into shaped rewards.

``import reward`` is cheap; each name below loads its module on first use::

    import gymnasium as gym
    import envs
    from reward import QwenProcessRM, RecordAnnotatedVideo, RewardWrapper

    env = gym.make("VLARL/PickPlace-v0", image_size=112)
    env = RecordAnnotatedVideo(RewardWrapper(env, QwenProcessRM("checkpoints/qwen2vl-tiny")), "videos")
"""

from importlib import import_module

_EXPORTS = {
    "ProcessRewardModel": "reward.base",
    "DummyRM": "reward.base",
    "OracleRM": "reward.base",
    "RandomRM": "reward.base",
    "QwenProcessRM": "reward.qwen_prm",
    "Shaping": "reward.shaping",
    "RewardWrapper": "reward.wrapper",
    "VectorRewardWrapper": "reward.vector",
    "RecordAnnotatedVideo": "reward.video",
    "VectorRecordAnnotatedVideo": "reward.video",
    "write_episode_video": "reward.video",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reward' has no attribute {name!r}")
