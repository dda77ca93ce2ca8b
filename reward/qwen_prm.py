"""``QwenProcessRM``: a Qwen2-VL(-family) model as a process reward model.

For each frame it builds the chat prompt ``<image> The task is {instruction}, is it completed?``
and reads P(positive) from the logits of the two answer tokens ("Yes"/"No" by default) at
the answer position, in one forward pass over the batch — it never generates and parses text.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from envs.rendering import view_frame_shape
from reward.base import ProcessRewardModel
from vla_rl import keys

logger = logging.getLogger("vla_rl.prm")

DEFAULT_PROMPT = "The task is {instruction}, is it completed?"
ANSWER_PAIRS = {"yes_no": ("Yes", "No"), "one_zero": ("1", "0"), "plus_minus": ("+", "-")}
PRM_CONFIG_FILE = "prm_config.json"  # written by reward.train_prm next to the weights it trains


def trained_prm_config(*directories: str | None) -> dict:
    """``prm_config.json`` (prompt and answer tokens a PRM was trained with) from the first of
    ``directories`` that has one, else ``{}``."""
    import json

    for directory in directories:
        path = os.path.join(directory, PRM_CONFIG_FILE) if directory else None
        if path and os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    return {}


def trained_camera(trained: dict) -> str | None:
    """The env camera (or view) of a PRM's training frames from its ``prm_config.json``: the
    recorded one; the front camera for a trained PRM that records none (trained before cameras
    were recorded); ``None`` (the policy's own view) for a PRM without that file."""
    if not trained:
        return None
    return trained.get("camera") or keys.FRONT_CAMERA


THRESHOLD_SEEDS = "decision_threshold_seeds"  # prm_config.json: the calibration episodes of the threshold


def threshold_fields(threshold: float, f1: float, tuned_on: str, window: int | None = None) -> dict:
    """The ``prm_config.json`` fields of a decision threshold and the F1 it reached on ``tuned_on``
    (at a causal score ``window`` chosen with it, when one was)."""
    fields = {
        "decision_threshold": float(threshold),
        "decision_threshold_validation_f1": float(f1),
        "decision_threshold_data": tuned_on,
    }
    return fields if window is None else {"score_window": int(window), **fields}


def record_decision_threshold(
    directory: str,
    threshold: float,
    f1: float,
    tuned_on: str,
    window: int | None = None,
    seeds: dict | None = None,
) -> str:
    """Set the decision threshold fields (and the score window it was tuned at, when given) in
    ``directory``'s ``prm_config.json``, atomically; the other fields are kept. ``seeds``
    (``{task: [seeds]}``) are the episodes of a calibration set it was tuned on, recorded as
    ``decision_threshold_seeds`` so that no later evaluation counts them as held out. Returns the
    file's path."""
    import json

    path = os.path.join(directory, PRM_CONFIG_FILE)
    config = trained_prm_config(directory)
    config.update(threshold_fields(threshold, f1, tuned_on, window))
    if seeds is not None:
        config[THRESHOLD_SEEDS] = seeds
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=1)
    os.replace(tmp, path)
    return path


def prompt_and_answers(model_path: str, adapter_path: str | None, prompt_template=None, answer_tokens=None):
    """The PRM's prompt template and (positive, negative) answer strings: the given ones, else
    those of the adapter's or model's ``prm_config.json``, else the defaults."""
    trained = trained_prm_config(adapter_path, model_path)
    prompt_template = prompt_template or trained.get("prompt_template", DEFAULT_PROMPT)
    answer_tokens = answer_tokens or tuple(trained.get("answer_tokens", ("Yes", "No")))
    if "{instruction}" not in prompt_template:
        raise ValueError(f"prompt_template must contain '{{instruction}}', got {prompt_template!r}.")
    if isinstance(answer_tokens, str):
        if answer_tokens not in ANSWER_PAIRS:
            raise ValueError(f"answer_tokens={answer_tokens!r}; choose one of {sorted(ANSWER_PAIRS)} or a pair.")
        answer_tokens = ANSWER_PAIRS[answer_tokens]
    return prompt_template, tuple(answer_tokens)


def memory_report(device: str) -> str:
    """``GPU Memory: X.XX GB`` (allocated) on CUDA, else the process's resident memory."""
    if device.startswith("cuda"):
        import torch

        return f"GPU Memory: {torch.cuda.memory_allocated() / 2**30:.2f} GB"
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return f"CPU RSS: {resident_pages * os.sysconf('SC_PAGE_SIZE') / 2**30:.2f} GB"


def answer_token_ids(tokenizer, texts) -> list[int]:
    """The vocabulary id of each answer string; ``ValueError`` unless each is exactly one token."""
    ids = []
    for text in texts:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(
                f"answer token {text!r} is {len(encoded)} tokens in this tokenizer; it must be exactly one."
            )
        ids.append(encoded[0])
    return ids


class QwenProcessRM(ProcessRewardModel):
    """Scores frames with a local Qwen2-VL / Qwen2.5-VL checkpoint.

    Args:
        model_path: checkpoint directory (``--prm_model_name_or_path``); never downloaded.
        adapter_path: optional LoRA adapter directory saved by peft (``--prm_checkpoint_path``).
        merge_adapter: merge the adapter into the weights (faster scoring).
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda[:N]"``.
        dtype: ``"auto"`` (bf16 on CUDA, fp32 on CPU) or a dtype name.
        prompt_template: the user text; must contain ``{instruction}``. Default: the one in the
            adapter's or the model's ``prm_config.json`` (a PRM trained by reward.train_prm),
            else ``DEFAULT_PROMPT``.
        answer_tokens: (positive, negative) answer strings, each a single token, e.g.
            ("Yes", "No"), ("1", "0"), ("+", "-"); or a key of ``ANSWER_PAIRS``. Default: from
            ``prm_config.json`` likewise, else ("Yes", "No").
        batch_size: frames per forward pass.
        log_every: log the scores of every N-th ``score`` call (0: never).
    """

    name = "qwen"

    def __init__(
        self,
        model_path: str,
        adapter_path: str | None = None,
        merge_adapter: bool = True,
        device: str = "auto",
        dtype: str = "auto",
        prompt_template: str | None = None,
        answer_tokens: tuple[str, str] | str | None = None,
        batch_size: int = 32,
        log_every: int = 0,
    ):
        from vla_rl.qwen.loading import apply_adapter, load_model, pick_device, read_checkpoint_config
        from vla_rl.qwen.processor import QwenImageTextProcessor

        prompt_template, answer_tokens = prompt_and_answers(model_path, adapter_path, prompt_template, answer_tokens)
        trained = trained_prm_config(adapter_path, model_path)
        self.image_size = trained.get("image_size") or None
        self.camera = trained_camera(trained)
        self.threshold = float(trained.get("decision_threshold", 0.5))
        self.score_window = int(trained.get("score_window", 1))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        read_checkpoint_config(model_path, "--prm_model_name_or_path")  # fail before loading anything
        if adapter_path is not None and not os.path.isdir(adapter_path):
            raise FileNotFoundError(f"--prm_checkpoint_path={adapter_path!r}: no such directory.")
        self.device = pick_device(device)
        logger.info("[PRM] Initializing Process Reward Model")
        logger.info("[PRM] Before PRM init - %s", memory_report(self.device))
        started = time.perf_counter()
        self.processor = QwenImageTextProcessor.from_pretrained(model_path)
        self.model = load_model(model_path, "--prm_model_name_or_path", self.device, dtype)
        if adapter_path is not None:
            self.model = apply_adapter(self.model, adapter_path, "--prm_checkpoint_path", merge=merge_adapter)
        self.answer_ids = answer_token_ids(self.processor.tokenizer, answer_tokens)
        self.answer_tokens = tuple(answer_tokens)
        self.prompt_template = prompt_template
        self.batch_size = batch_size
        self.log_every = log_every
        self._calls = 0
        adapter = f" with LoRA adapter {adapter_path}{' (merged)' if merge_adapter else ''}" if adapter_path else ""
        logger.info(
            "[PRM] Loaded %s from %s%s on %s in %.1f s",
            type(self.model).__name__,
            model_path,
            adapter,
            self.device,
            time.perf_counter() - started,
        )
        logger.info("[PRM] After PRM init - %s", memory_report(self.device))

    def prompts(self, instructions: list[str]) -> list[str]:
        return [self.prompt_template.format(instruction=text) for text in instructions]

    def answer_logits(self, frames: np.ndarray, instructions: list[str]):
        """``(B, 2)`` float32 logits of (positive, negative) at the answer position."""
        import torch

        inputs = self.processor(frames, self.prompts(instructions))
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            logits = self.model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1, :]
        return logits[:, self.answer_ids].float()

    def _score(self, frames, instructions, infos):
        import torch

        view = self.camera or keys.FRONT_CAMERA  # no recorded camera: frames of one camera
        if self.image_size and frames.shape[1:3] != view_frame_shape(self.image_size, view)[:2]:
            raise ValueError(
                f"this PRM was trained on {self.image_size}-px frames and got {frames.shape[2]}x{frames.shape[1]}; "
                f"render them at its size (--prm_image_size {self.image_size}, or the env's prm_image_size)."
            )

        scores = []
        for start in range(0, len(frames), self.batch_size):
            end = start + self.batch_size
            logits = self.answer_logits(frames[start:end], instructions[start:end])
            scores.append(torch.softmax(logits, dim=-1)[:, 0].cpu().numpy())
        result = np.concatenate(scores).astype(np.float32)
        self._calls += 1
        if self.log_every and self._calls % self.log_every == 0:
            logger.info(
                "[PRM] call %d: scores %s", self._calls, np.array2string(result, precision=3, max_line_width=200)
            )
        return result

    def close(self) -> None:
        self.model = None
