"""Qwen2-VL toolbox shared by the reward model and the policy: checkpoint builder, image-only
processor, validated loading."""
