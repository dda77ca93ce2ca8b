"""Policy checkpoints: a Hugging Face Qwen2-VL directory plus what makes it a VLA policy.

Layout (a superset of a ``save_pretrained`` checkpoint, so every file a Qwen2-VL loader
expects is there)::

    config.json, model.safetensors, generation_config.json   the language-vision model
    tokenizer files, chat_template.json, preprocessor_config.json
    action_stats.json      q01/q99 of the training actions (the OpenVLA normalisation)
    vla_policy.json        prompt template, action_dim, state statistics (if the policy reads
                           the proprioceptive state), image size and tasks it was trained on
    value_head.safetensors the critic's linear head

A plain Qwen2-VL checkpoint (no ``vla_policy.json``) also loads: actions are then read as
normalised values in [-1, 1], no state is used and the value head starts at zero.
"""

from __future__ import annotations

import json
import os

import numpy as np

from vla_rl import keys
from vla_rl.policy.action_tokenizer import STATS_FILE, ActionStats, ActionTokenizer
from vla_rl.policy.vla import DEFAULT_PROMPT, VLAPolicy

POLICY_FILE = "vla_policy.json"
VALUE_HEAD_FILE = "value_head.safetensors"


def read_policy_config(path: str) -> dict:
    """``vla_policy.json`` of a policy checkpoint, or the defaults of a plain Qwen2-VL one."""
    config = {"prompt_template": DEFAULT_PROMPT, "action_dim": 7, "state_q01": None, "state_q99": None}
    config["camera"] = keys.FRONT_CAMERA  # a policy saved before views were recorded saw the front camera
    file = os.path.join(path, POLICY_FILE)
    if os.path.isfile(file):
        with open(file) as f:
            config.update(json.load(f))
    return config


def load_policy(
    path: str, flag: str = "--vla_path", device: str = "auto", dtype: str = "auto", max_batch: int = 16
) -> VLAPolicy:
    """A :class:`VLAPolicy` from a policy checkpoint (or a plain Qwen2-VL checkpoint)."""
    from safetensors.torch import load_file

    from vla_rl.qwen.loading import load_model, read_checkpoint_config
    from vla_rl.qwen.processor import QwenImageTextProcessor

    read_checkpoint_config(path, flag)  # clear errors before loading anything
    config = read_policy_config(path)
    stats = ActionStats.load(path) if os.path.isfile(os.path.join(path, STATS_FILE)) else None
    model = load_model(path, flag, device=device, dtype=dtype)
    vocab = model.config.get_text_config().vocab_size
    state_stats = None
    if config.get("state_q01") is not None:
        state_stats = ActionStats(np.array(config["state_q01"]), np.array(config["state_q99"]))
    policy = VLAPolicy(
        model,
        QwenImageTextProcessor.from_pretrained(path),
        ActionTokenizer(vocab, config["action_dim"], stats),
        prompt_template=config["prompt_template"],
        max_batch=max_batch,
        state_stats=state_stats,
    )
    head = os.path.join(path, VALUE_HEAD_FILE)
    if os.path.isfile(head):
        policy.value_head.load_state_dict(load_file(head, device=str(policy.device)))
    policy.image_size = config.get("image_size")
    policy.camera = config["camera"]
    policy.tasks = config.get("tasks")
    return policy


def save_policy(
    policy: VLAPolicy,
    directory: str,
    image_size: int | None = None,
    model=None,
    state_dict: dict | None = None,
    value_state: dict | None = None,
) -> None:
    """Write ``policy`` into the (existing, empty) ``directory``. ``model`` overrides the
    model to save (e.g. a LoRA-merged copy of ``policy.model``); ``state_dict``/``value_state``
    override the weights (e.g. gathered from FSDP shards)."""
    from safetensors.torch import save_file

    model = policy.model if model is None else model
    model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
    policy.processor.save_pretrained(directory)
    if policy.action_tokenizer.stats is not None:
        policy.action_tokenizer.stats.save(directory)
    state = policy.state_stats
    config = {
        "prompt_template": policy.prompt_template,
        "action_dim": policy.action_tokenizer.action_dim,
        "state_q01": None if state is None else state.q01.tolist(),
        "state_q99": None if state is None else state.q99.tolist(),
        "image_size": image_size if image_size is not None else policy.image_size,
        "camera": policy.camera,
        "tasks": policy.tasks,
    }
    with open(os.path.join(directory, POLICY_FILE), "w") as f:
        json.dump(config, f, indent=2)
    value_state = policy.value_head.state_dict() if value_state is None else value_state
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in value_state.items()},
        os.path.join(directory, VALUE_HEAD_FILE),
    )
