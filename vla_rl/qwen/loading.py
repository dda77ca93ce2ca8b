"""Validated loading of Qwen2-VL-family checkpoints and LoRA adapters.

Errors are raised before any weights are read and name the flag, the path and the fix.
"""

from __future__ import annotations

import json
import os

FAMILY = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}


def read_checkpoint_config(path: str, flag: str) -> dict:
    """``config.json`` of a Qwen2-VL-family checkpoint directory, or a clear error."""
    if not path:
        raise ValueError(f"{flag} is empty; pass the directory of a Qwen2-VL checkpoint.")
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{flag}={path!r}: no such directory. Models are never downloaded here: pass a local "
            "checkpoint directory (build a small one with `python -m vla_rl.qwen.build --out DIR`)."
        )
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{flag}={path!r} has no config.json: it is not a Hugging Face model checkpoint.")
    with open(config_path) as f:
        config = json.load(f)
    model_type = config.get("model_type")
    if model_type not in FAMILY:
        raise ValueError(
            f"{flag}={path!r} is a {model_type!r} checkpoint, not a Qwen2-VL-family one "
            f"(model_type must be one of {sorted(FAMILY)})."
        )
    if not os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        raise ValueError(f"{flag}={path!r} lacks preprocessor_config.json: it is not a complete Qwen2-VL checkpoint.")
    if not any(os.path.isfile(os.path.join(path, n)) for n in ("tokenizer.json", "vocab.json")):
        raise ValueError(f"{flag}={path!r} has no tokenizer (tokenizer.json or vocab.json).")
    return config


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use 'cpu' or 'auto'.")
    return device


def pick_dtype(device: str, dtype: str = "auto"):
    """bf16 on CUDA, fp32 on CPU, unless ``dtype`` names one."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"dtype={dtype!r} is not one of {sorted(table)} or 'auto'.")
    return table[dtype]


def load_model(path: str, flag: str, device: str = "auto", dtype: str = "auto"):
    """The model of a Qwen2-VL-family checkpoint, in eval mode, on ``device``."""
    import transformers

    config = read_checkpoint_config(path, flag)
    device = pick_device(device)
    model_class = getattr(transformers, FAMILY[config["model_type"]])
    model = model_class.from_pretrained(path, dtype=pick_dtype(device, dtype))
    if device == "cpu":
        linear_patch_embed(model)
    return model.to(device).eval()


def _linear_patch_forward(self, hidden_states):
    import torch.nn.functional as F

    weight = self.proj.weight
    flat = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
    return F.linear(flat, weight.reshape(weight.shape[0], -1))


def linear_patch_embed(model) -> int:
    """Compute the vision patch embedding (a Conv3d whose stride equals its kernel, over inputs
    that are exactly one kernel each) as the equivalent matrix product: the same result, about
    5x faster on CPU, where conv3d has no fast path. Returns how many modules were switched."""
    import types

    import torch

    switched = 0
    for module in model.modules():
        proj = getattr(module, "proj", None)
        if (
            isinstance(proj, torch.nn.Conv3d)
            and tuple(proj.stride) == tuple(proj.kernel_size)
            and proj.bias is None
            and hasattr(module, "patch_size")
        ):
            module.forward = types.MethodType(_linear_patch_forward, module)
            switched += 1
    return switched


def check_adapter(model, adapter_path: str, flag: str) -> None:
    """Raise a clear error unless ``adapter_path`` holds a LoRA adapter that fits ``model``."""
    from safetensors import safe_open

    if not os.path.isdir(adapter_path):
        raise FileNotFoundError(f"{flag}={adapter_path!r}: no such directory (a LoRA adapter saved by peft).")
    config_path = os.path.join(adapter_path, "adapter_config.json")
    weights_path = os.path.join(adapter_path, "adapter_model.safetensors")
    if not os.path.isfile(config_path) or not os.path.isfile(weights_path):
        raise ValueError(
            f"{flag}={adapter_path!r} is not a peft adapter: adapter_config.json and adapter_model.safetensors "
            "are required."
        )
    modules = dict(model.named_modules())
    with safe_open(weights_path, framework="pt") as f:
        for key in f.keys():
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            name = key.split(".lora_")[0].removeprefix("base_model.model.")
            module = modules.get(name)
            shape = f.get_slice(key).get_shape()
            if module is None or not hasattr(module, "in_features"):
                raise ValueError(
                    f"{flag}={adapter_path!r} was trained on a different base model: it adapts {name!r}, "
                    "which this model does not have."
                )
            expected = module.in_features if ".lora_A." in key else module.out_features
            actual = shape[1] if ".lora_A." in key else shape[0]
            if expected != actual:
                raise ValueError(
                    f"{flag}={adapter_path!r} does not match the base model: {name} has "
                    f"{'in' if '.lora_A.' in key else 'out'}_features={expected}, the adapter expects {actual}."
                )


def apply_adapter(model, adapter_path: str, flag: str, merge: bool = True):
    """Load a LoRA adapter onto ``model`` with peft (merged into the weights when ``merge``)."""
    from peft import PeftModel

    check_adapter(model, adapter_path, flag)
    model = PeftModel.from_pretrained(model, adapter_path)
    if merge:
        model = model.merge_and_unload()
    return model.eval()
