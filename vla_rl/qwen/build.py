"""Build Qwen2-VL-architecture checkpoints locally: config, random weights, tokenizer, processor.

No download is involved: the byte-level BPE tokenizer is trained here on the project's own
instruction vocabulary (Qwen2's pre-tokenisation regex, the Qwen2-VL special tokens and chat
template), and the directory is laid out like the public ``Qwen/Qwen2-VL-2B-Instruct``
(``config.json``, ``model.safetensors``, ``tokenizer.json``, ``chat_template.json``, a
``preprocessor_config.json`` naming ``Qwen2VLProcessor``), so that the real
``from_pretrained`` loading path runs on it. Command line::

    python -m vla_rl.qwen.build --preset tiny --out checkpoints/qwen2vl-tiny

Presets: ``tiny`` (about 0.3 M parameters, seconds on a CPU) and ``qwen2-vl-2b`` (the public
2B model's shapes with random weights, for memory and speed measurements). The vocabulary
ends with ``NUM_RESERVED_TOKENS`` ids that no text maps to: the VLA policy uses the last 256
for its action bins (the OpenVLA convention).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from envs.scene import COLOUR_NAMES
from vla_rl.atomic import atomic_directory

NUM_RESERVED_TOKENS = 256  # trailing vocabulary ids no text maps to (action bins)
SYSTEM_PROMPT = "You are a helpful assistant."
# Qwen2's pre-tokenisation: contractions, letters, single digits, punctuation runs, spaces.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The Qwen2-VL chat template (system prompt by default; images become vision tokens).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Config values of the public Qwen2-VL-2B-Instruct (special token ids are set from the
# locally built tokenizer, whose ids differ from the public one's).
QWEN2_VL_2B = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "sliding_window": 32768,
    "use_sliding_window": False,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "vocab_size": 151936,
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 1536,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "max_window_layers": 2,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    "sliding_window": 4096,
    "use_sliding_window": False,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "vision_config": {
        "depth": 2,
        "embed_dim": 64,
        "mlp_ratio": 2,
        "num_heads": 4,
        "in_chans": 3,
        "hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}
# The warm-start VLA of the default models: small enough to clone and fine-tune on 2 CPU cores,
# with 7-px patches so that a 56-px frame gives 64 patches (16 image tokens after the merge).
VLA_SMALL = {
    **TINY,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "max_window_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
    "vision_config": {**TINY["vision_config"], "embed_dim": 96, "hidden_size": 128, "num_heads": 4, "patch_size": 7},
}
# The small PRM's shape for 112-px frames: vla-small with 14-px patches, so that a frame twice the
# side still gives 64 patches (16 image tokens) and costs what a 56-px frame costs vla-small.
PRM_SMALL = {**VLA_SMALL, "vision_config": {**VLA_SMALL["vision_config"], "patch_size": 14}}
PRESETS = {"tiny": TINY, "vla-small": VLA_SMALL, "prm-small": PRM_SMALL, "qwen2-vl-2b": QWEN2_VL_2B}
# Image sizes the processor keeps as they are (no resize): up to 224x224 -> 64 image tokens.
DEFAULT_MIN_PIXELS = 28 * 28
DEFAULT_MAX_PIXELS = 224 * 224


def tokenizer_corpus() -> list[str]:
    """Text the tokenizer is trained on: the project's instructions, prompts and answers."""
    objects = ["block", "tray", "target", "pad", "cube", "puck", "goal", "drawer", "door", "button", "window"]
    verbs = ["touch", "push", "put", "pick", "place", "stack", "reach", "move", "open", "close", "press", "lift"]
    lines = [SYSTEM_PROMPT, "The task is", "is it completed?", "Yes", "No", "+", "-", "0", "1", "What action should"]
    lines += ["the robot take to", "In:", "Out:", "Answer Yes or No.", "state", "progress", "success", "failure"]
    for colour in COLOUR_NAMES:
        for obj in objects:
            lines.append(f"{colour} {obj}")
        for verb in verbs:
            lines.append(f"{verb} the {colour} block onto the {colour} target")
            lines.append(f"{verb} the {colour} block in the {colour} tray")
            lines.append(f"{verb} the {colour} block on the {colour} block")
    for verb in verbs:
        for obj in objects:
            lines.append(f"The task is {verb} the {obj}, is it completed? Yes No")
    lines += [str(i) for i in range(100)]
    lines += ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?'\"()[]{}<>/\\|@#$%^&*_=~`"]
    return lines


def build_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE ``Qwen2Tokenizer`` with the Qwen2-VL special tokens and chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    core.train_from_iterator(tokenizer_corpus() * 4, trainer)
    core.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_config(preset: str, tokenizer) -> dict:
    """The ``config.json`` contents for ``preset`` with special ids from ``tokenizer``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    config = json.loads(json.dumps(PRESETS[preset]))
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    if "vocab_size" not in config:
        # Text ids, rounded up to a multiple of 64, then the reserved (action) ids.
        config["vocab_size"] = -(-len(tokenizer) // 64) * 64 + NUM_RESERVED_TOKENS
    config.update(
        architectures=["Qwen2VLForConditionalGeneration"],
        model_type="qwen2_vl",
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        attention_dropout=0.0,
        initializer_range=0.02,
        use_cache=True,
        torch_dtype="float32",
    )
    if len(tokenizer) > config["vocab_size"] - NUM_RESERVED_TOKENS:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens; the vocabulary leaves too few reserved ids.")
    return config


def preprocessor_config(
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    patch_size: int = 14,
    position_frame: bool = False,
) -> dict:
    """``preprocessor_config.json`` in the public checkpoints' layout (plus, optionally, the
    project's position-frame switch; see :class:`vla_rl.qwen.processor.QwenImageProcessor`)."""
    extra = {"vla_rl_position_frame": True} if position_frame else {}
    return {
        **extra,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "patch_size": patch_size,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
    }


def init_ordinal_bin_embeddings(model, cycles: float = 8.0) -> None:
    """Give the last 256 (action-bin) embedding rows an ordinal structure: row ``k`` holds
    Fourier features of the bin's value, so neighbouring bins start close together. Bins are
    ordered values; with random rows a model must learn that order from data, one bin at a
    time. With tied input/output embeddings this also smooths the predicted action logits."""
    import torch

    embeddings = model.get_input_embeddings().weight
    hidden = embeddings.shape[1]
    values = torch.linspace(-1.0, 1.0, 256)[:, None]
    frequencies = torch.linspace(0.25, cycles, hidden // 2)[None, :] * torch.pi
    features = torch.cat([torch.cos(values * frequencies), torch.sin(values * frequencies)], dim=1)
    scale = float(embeddings.detach().std())
    with torch.no_grad():
        embeddings[-256:, : features.shape[1]] = features * scale * (2.0**0.5)


def build_checkpoint(
    out: str,
    preset: str = "tiny",
    seed: int = 0,
    overwrite: bool = False,
    ordinal_bins: bool = False,
    position_frame: bool = False,
) -> str:
    """Write a complete checkpoint directory to ``out`` (atomically) and return ``out``.
    ``ordinal_bins`` initialises the action-bin embeddings with :func:`init_ordinal_bin_embeddings`;
    ``position_frame`` makes the processor feed each patch's coordinates to the vision tower."""
    import torch
    from transformers import GenerationConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    if os.path.exists(out) and not overwrite:  # checked before the (slow) model build
        raise FileExistsError(f"--out {out} already exists; pass --overwrite to replace it.")
    tokenizer = build_tokenizer()
    config_dict = build_config(preset, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**config_dict)).eval()
    if ordinal_bins:
        init_ordinal_bin_embeddings(model)
    with atomic_directory(out, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        GenerationConfig(
            bos_token_id=config_dict["bos_token_id"],
            eos_token_id=[config_dict["eos_token_id"], config_dict["pad_token_id"]],
            pad_token_id=config_dict["pad_token_id"],
        ).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "chat_template.json"), "w") as f:
            json.dump({"chat_template": CHAT_TEMPLATE}, f, indent=2)
        with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
            patch_size = config_dict["vision_config"]["patch_size"]
            processor = preprocessor_config((2 * patch_size) ** 2, patch_size=patch_size, position_frame=position_frame)
            json.dump(processor, f, indent=2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla_rl.qwen.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--ordinal-bins", action="store_true", help="ordinal (Fourier) init of action-bin embeddings")
    parser.add_argument("--position-frame", action="store_true", help="feed patch coordinates to the vision tower")
    args = parser.parse_args(argv)
    try:
        build_checkpoint(args.out, args.preset, args.seed, args.overwrite, args.ordinal_bins, args.position_frame)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote a {args.preset} Qwen2-VL checkpoint to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
