"""An image-only Qwen2-VL processor that works without torchvision, with a fast tensor path.

The stock ``Qwen2VLProcessor`` also builds a video processor, which needs torchvision; on CPU
machines torchvision is unavailable. This processor pairs the checkpoint's tokenizer with the
PIL image processor (``Qwen2VLImageProcessorPil``), built from the checkpoint's
``preprocessor_config.json``, and:

* tokenises each distinct prompt once (prompts repeat: one per instruction),
* expands the image placeholder into the right number of image tokens per frame,
* left-pads the batch (the answer position is then the last one for every row),
* converts frames that are already at the processor's target size with batched tensor ops
  (rescale, normalise, patchify) instead of PIL — the same ``pixel_values`` to within 1e-5.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

import numpy as np
import torch

IMAGE_PAD = "<|image_pad|>"
POSITION_FRAME_KEY = "vla_rl_position_frame"


class QwenImageProcessor:
    """Frames ``(B, H, W, 3) uint8`` -> ``pixel_values (sum of patches, C*T*P*P)`` and
    ``image_grid_thw (B, 3)``, as the reference Qwen2-VL image processor produces them."""

    def __init__(self, config: dict):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        self.config = dict(config)
        # Optional: the second temporal copy of every frame is replaced by a fixed image of its
        # pixel coordinates, so that each patch embedding carries its absolute position (the
        # vision tower's rotary embeddings carry relative positions only). For models trained
        # with it (the project's small VLA); never for public checkpoints.
        self.position_frame = bool(config.get(POSITION_FRAME_KEY, False))
        self.patch_size = int(config.get("patch_size", 14))
        self.merge_size = int(config.get("merge_size", 2))
        self.temporal_patch_size = int(config.get("temporal_patch_size", 2))
        size = config.get("size") or {}
        self.min_pixels = int(config.get("min_pixels", size.get("shortest_edge", 56 * 56)))
        self.max_pixels = int(config.get("max_pixels", size.get("longest_edge", 28 * 28 * 1280)))
        self.mean = torch.tensor(config.get("image_mean", [0.48145466, 0.4578275, 0.40821073]), dtype=torch.float32)
        self.std = torch.tensor(config.get("image_std", [0.26862954, 0.26130258, 0.27577711]), dtype=torch.float32)
        self.reference = Qwen2VLImageProcessorPil(
            size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            patch_size=self.patch_size,
            merge_size=self.merge_size,
            temporal_patch_size=self.temporal_patch_size,
            image_mean=self.mean.tolist(),
            image_std=self.std.tolist(),
        )

    @classmethod
    def from_pretrained(cls, path: str) -> QwenImageProcessor:
        with open(os.path.join(path, "preprocessor_config.json")) as f:
            return cls(json.load(f))

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the reference processor resizes a frame to."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        factor = self.patch_size * self.merge_size
        return smart_resize(height, width, factor=factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)

    def tokens_per_image(self, height: int, width: int) -> int:
        """Image tokens (after the spatial merge) for one frame of this size."""
        h, w = self.target_size(height, width)
        return (h // self.patch_size) * (w // self.patch_size) // self.merge_size**2

    def __call__(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        batch, height, width, _ = frames.shape
        if self.target_size(height, width) == (height, width):
            return self.fast(frames)
        if self.position_frame:
            factor = self.patch_size * self.merge_size
            raise ValueError(
                f"this model reads a position frame and needs frames whose sides are multiples of {factor} px "
                f"within its pixel limits; got {height}x{width} (set the env image size accordingly)."
            )
        out = self.reference(list(frames), return_tensors="pt")
        return out["pixel_values"].to(torch.float32), out["image_grid_thw"]

    def fast(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The tensor path for frames already at the target size (no resize needed)."""
        batch, height, width, channels = frames.shape
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = height // p, width // p
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32) * (1.0 / 255.0)
        x = ((x - self.mean) / self.std).permute(0, 3, 1, 2)  # (B, C, H, W)

        def patches(images):  # (B, C, H, W) -> (B, gh/m, gw/m, m, m, C, p, p)
            images = images.reshape(len(images), channels, gh // m, m, p, gw // m, m, p)
            return images.permute(0, 2, 5, 3, 6, 1, 4, 7)

        x = patches(x)
        if self.position_frame and t == 2:
            coords = patches(position_image(height, width).expand(batch, -1, -1, -1))
            x = torch.stack([x, coords], dim=6)  # the frame, then its coordinates
        else:
            x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1)  # temporal copies of the frame
        pixel_values = x.reshape(batch * gh * gw, channels * t * p * p)
        grid = torch.tensor([[1, gh, gw]], dtype=torch.int64).repeat(batch, 1)
        return pixel_values, grid


@lru_cache(maxsize=8)
def position_image(height: int, width: int) -> torch.Tensor:
    """``(1, 3, H, W)``: column and row coordinates in [-2, 2] and their product."""
    rows = torch.linspace(-2.0, 2.0, height)[:, None].expand(height, width)
    cols = torch.linspace(-2.0, 2.0, width)[None, :].expand(height, width)
    return torch.stack([cols, rows, cols * rows / 2.0])[None]


class QwenImageTextProcessor:
    """Builds left-padded batches of (one frame + one user text) chat prompts.

    Args:
        tokenizer: the checkpoint's tokenizer (with the Qwen2-VL chat template).
        image_processor: a :class:`QwenImageProcessor`.
    """

    def __init__(self, tokenizer, image_processor: QwenImageProcessor):
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template (chat_template.json / .jinja missing).")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {IMAGE_PAD} token: not a Qwen2-VL tokenizer.")
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._prompt_ids = lru_cache(maxsize=4096)(self._tokenize_prompt)

    @classmethod
    def from_pretrained(cls, path: str) -> QwenImageTextProcessor:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.chat_template is None:
            for name in ("chat_template.json", "chat_template.jinja"):
                template_path = os.path.join(path, name)
                if os.path.isfile(template_path):
                    with open(template_path) as f:
                        text = f.read()
                    tokenizer.chat_template = json.loads(text)["chat_template"] if name.endswith("json") else text
                    break
        return cls(tokenizer, QwenImageProcessor.from_pretrained(path))

    def save_pretrained(self, directory: str) -> None:
        """Write the tokenizer, ``chat_template.json`` and ``preprocessor_config.json``."""
        self.tokenizer.save_pretrained(directory)
        with open(os.path.join(directory, "chat_template.json"), "w") as f:
            json.dump({"chat_template": self.tokenizer.chat_template}, f, indent=2)
        with open(os.path.join(directory, "preprocessor_config.json"), "w") as f:
            json.dump(self.image_processor.config, f, indent=2)

    def _tokenize_prompt(self, user_text: str, assistant_prefix: str) -> tuple[int, ...]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text + assistant_prefix, add_special_tokens=False)["input_ids"]
        if ids.count(self.image_token_id) != 1:
            raise ValueError("the chat template must produce exactly one image placeholder per prompt.")
        return tuple(ids)

    def chat_ids(self, user_text: str, assistant_prefix: str = "") -> list[int]:
        """Token ids of one prompt with a single (unexpanded) image placeholder, as vLLM takes them."""
        return list(self._prompt_ids(user_text, assistant_prefix))

    def prompt_ids(self, user_text: str, image_tokens: int, assistant_prefix: str = "") -> list[int]:
        """Token ids of one prompt with its image placeholder expanded to ``image_tokens``."""
        ids = self._prompt_ids(user_text, assistant_prefix)
        at = ids.index(self.image_token_id)
        return [*ids[:at], *([self.image_token_id] * image_tokens), *ids[at + 1 :]]

    def __call__(self, frames: np.ndarray, user_texts: list[str], assistant_prefix: str = "") -> dict:
        """Model inputs for a batch: ``input_ids``, ``attention_mask`` (left-padded),
        ``mm_token_type_ids``, ``pixel_values``, ``image_grid_thw``."""
        pixel_values, grid = self.image_processor(frames)
        per_image = int(grid[0].prod()) // self.image_processor.merge_size**2
        rows = [self.prompt_ids(text, per_image, assistant_prefix) for text in user_texts]
        length = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, length - len(row) :] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": (input_ids == self.image_token_id).to(torch.int32),
            "pixel_values": pixel_values,
            "image_grid_thw": grid,
        }
