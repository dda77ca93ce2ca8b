"""vLLM for the Qwen2-VL-family models of the project (GPU machines; ``pip install '.[vllm]'``).

The request building and the output parsing are plain functions that need no vLLM, so they are
tested on CPU: a request is ``{"prompt_token_ids": [...], "multi_modal_data": {"image": PIL}}``
with the chat prompt of :class:`~vla_rl.qwen.processor.QwenImageTextProcessor` (one image
placeholder, which vLLM expands), and a parsed output reads the per-token log-probabilities
vLLM returns (``{token_id: Logprob}`` per generated position).
"""

from __future__ import annotations

import math
import os

import numpy as np

from vla_rl.distributed.backends import VLLM_HINT, installed


def require_vllm():
    if not installed("vllm"):
        raise ImportError(VLLM_HINT)
    import vllm

    return vllm


def requests(processor, frames: np.ndarray, user_texts: list[str], extra_ids=None) -> list[dict]:
    """One vLLM prompt per frame: the chat prompt's token ids (image placeholder unexpanded),
    plus ``extra_ids[i]`` appended (e.g. the policy's state tokens), and the frame."""
    from PIL import Image

    if len(frames) != len(user_texts):
        raise ValueError(f"got {len(frames)} frames but {len(user_texts)} texts.")
    out = []
    for i, (frame, text) in enumerate(zip(frames, user_texts, strict=True)):
        ids = processor.chat_ids(text)
        if extra_ids is not None:
            ids += [int(t) for t in extra_ids[i]]
        out.append({"prompt_token_ids": ids, "multi_modal_data": {"image": Image.fromarray(np.asarray(frame))}})
    return out


def logprob_value(entry) -> float:
    """A vLLM ``Logprob`` (or a plain float) as a float."""
    return float(getattr(entry, "logprob", entry))


def position_logprobs(output, position: int) -> dict[int, float]:
    """``{token_id: logprob}`` at a generated position of a vLLM ``RequestOutput``."""
    completion = output.outputs[0]
    if completion.logprobs is None or len(completion.logprobs) <= position:
        raise ValueError("the vLLM output has no log-probabilities; request them with SamplingParams(logprobs=k).")
    return {int(k): logprob_value(v) for k, v in completion.logprobs[position].items()}


def make_llm(model_path: str, gpu_memory_utilization: float = 0.3, seed: int = 0, enable_lora: bool = False, **kwargs):
    """A ``vllm.LLM`` on a local checkpoint, one image per prompt, with the log-probabilities of
    the processed distribution (after temperature and allowed-token masking) where supported.

    The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so that the trainer
    can load new weights into it with :func:`load_weights`."""
    vllm = require_vllm()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    options = {
        "model": model_path,
        "dtype": "bfloat16",
        "gpu_memory_utilization": gpu_memory_utilization,
        "limit_mm_per_prompt": {"image": 1},
        "seed": seed,
        "enable_lora": enable_lora,
        **kwargs,
    }
    try:
        return vllm.LLM(logprobs_mode="processed_logprobs", **options)
    except TypeError:  # older vLLM: raw log-probabilities (the parsers below work with either)
        return vllm.LLM(**options)


def load_weights(llm, named_tensors: list[tuple[str, object]]) -> None:
    """Load ``(name, tensor)`` pairs (Hugging Face names) into the engine's model."""
    if hasattr(llm, "apply_model"):
        llm.apply_model(lambda model: model.load_weights(iter(named_tensors)))
        return
    engine = llm.llm_engine
    worker = getattr(engine.model_executor, "driver_worker", None)
    model = getattr(worker, "worker", worker).model_runner.model
    model.load_weights(iter(named_tensors))


def two_way_probability(logprobs: dict[int, float], positive: int, negative: int) -> float:
    """P(positive) of the two answer tokens, ``exp(lp+) / (exp(lp+) + exp(lp-))``: the same from
    raw (full-vocabulary) and from processed (two allowed tokens) log-probabilities."""
    missing = [t for t in (positive, negative) if t not in logprobs]
    if missing:
        raise ValueError(
            f"answer token ids {missing} are not among the returned log-probabilities {sorted(logprobs)}; "
            "request them with allowed_token_ids=[positive, negative] and logprobs=2."
        )
    difference = logprobs[negative] - logprobs[positive]
    if difference > 700:
        return 0.0
    return 1.0 / (1.0 + math.exp(difference))
