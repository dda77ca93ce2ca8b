"""PRM throughput on CPU: the logits path vs generate-and-parse, batching, preprocessing, wrapper cost.

Usage::

    .venv/bin/python bench/prm_throughput.py [--model DIR] [--seconds 2] [--out results.json]

Without ``--model`` a ``tiny`` Qwen2-VL checkpoint is built in a temporary directory. Printed
against anchors measured in the same run:

* ``QwenProcessRM.score`` (one forward pass, answer-token logits) vs the reference systems'
  way — ``generate(max_new_tokens=2)`` and parsing the text — at batch 1;
* frames/s at batch 1, 8, 32, 64 for 64 px and 224 px frames, split into preprocessing and
  forward (64 px is not a multiple of 28: it goes through the reference PIL processor, resized
  to 56 px; 224 px takes the tensor fast path);
* preprocessing per frame: fast path vs the reference PIL processor at 224 px;
* ``RewardWrapper`` with ``DummyRM`` vs the bare env step (``VLARL/Reach-v0``, 128 px);
* peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time

import numpy as np


def _per_call(fn, seconds: float, repeats: int = 3) -> float:
    """Best (lowest) seconds per call over ``repeats`` windows (after 2 warm-up calls)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while True:
            fn()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / repeats and count >= 3:
                break
        best = min(best, elapsed / count)
    return best


def generate_and_parse(prm, frames, instructions) -> np.ndarray:
    """The anchor: generate two tokens and parse the text (what the reference systems do)."""
    import torch

    inputs = prm.processor(frames, prm.prompts(instructions))
    with torch.inference_mode():
        out = prm.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    texts = prm.processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    positive = prm.answer_tokens[0]
    return np.array([1.0 if text.strip().startswith(positive) else 0.0 for text in texts], np.float32)


def bench_model(prm, seconds: float) -> dict:
    import torch

    rng = np.random.default_rng(0)
    rows = {}
    for size in (64, 224):
        for batch in (1, 8, 32, 64):
            frames = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
            texts = ["put the red block in the blue tray"] * batch
            prompts = prm.prompts(texts)
            inputs = prm.processor(frames, prompts)

            def forward(inputs=inputs):
                with torch.inference_mode():
                    prm.model(**inputs, logits_to_keep=1, use_cache=False)

            preprocess = _per_call(lambda f=frames, p=prompts: prm.processor(f, p), seconds)
            model = _per_call(forward, seconds)
            total = _per_call(lambda f=frames, t=texts: prm.score(f, t), seconds)
            rows[(size, batch)] = {
                "preprocess_ms_per_frame": 1e3 * preprocess / batch,
                "forward_ms_per_frame": 1e3 * model / batch,
                "frames_per_s": batch / total,
            }
    frame = rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    text = ["put the red block in the blue tray"]
    logits_path = _per_call(lambda: prm.score(frame, text), seconds)
    generate_path = _per_call(lambda: generate_and_parse(prm, frame, text), seconds)
    frames = rng.integers(0, 256, (32, 224, 224, 3), dtype=np.uint8)
    fast = _per_call(lambda: prm.processor.image_processor.fast(frames), seconds) / 32
    reference = (
        _per_call(lambda: prm.processor.image_processor.reference(list(frames), return_tensors="pt"), seconds) / 32
    )
    return {
        "rows": rows,
        "logits_s": logits_path,
        "generate_s": generate_path,
        "fast_pre_s": fast,
        "reference_pre_s": reference,
    }


def bench_wrapper(steps: int = 400, rounds: int = 6) -> tuple[float, float]:
    """Median seconds per step of an env and of the same env object under
    RewardWrapper(DummyRM), timed step by step in alternating blocks (medians, because the
    noise of a shared machine is larger than the overhead being measured)."""
    import gymnasium as gym

    import envs  # noqa: F401
    from reward.base import DummyRM
    from reward.wrapper import RewardWrapper

    action = np.zeros(7, np.float32)
    bare_env = gym.make("VLARL/Reach-v0", image_size=128)
    wrapped_env = RewardWrapper(bare_env, DummyRM(), weight=0.1)  # the same env object underneath
    times: dict[str, list[float]] = {"bare": [], "wrapped": []}
    for _ in range(rounds):
        for name, env in (("bare", bare_env), ("wrapped", wrapped_env)):
            env.reset(seed=0)
            for _ in range(steps):
                start = time.perf_counter()
                _, _, terminated, truncated, _ = env.step(action)
                times[name].append(time.perf_counter() - start)
                if terminated or truncated:
                    env.reset()
    wrapped_env.close()
    return float(np.median(times["bare"])), float(np.median(times["wrapped"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Qwen2-VL checkpoint directory (default: build tiny)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    import torch

    from reward.qwen_prm import QwenProcessRM
    from vla_rl.qwen.build import build_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or build_checkpoint(os.path.join(tmp, "tiny"), preset="tiny")
        prm = QwenProcessRM(path, batch_size=64)
        result = bench_model(prm, args.seconds)
    bare, wrapped = bench_wrapper()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )

    print(f"\nPRM throughput ({'tiny preset' if args.model is None else args.model}; {machine}); best of 3 windows\n")
    print("| px | batch | preprocess ms/frame | forward ms/frame | frames/s (score) | vs batch 1 |")
    print("|---|---|---|---|---|---|")
    for (size, batch), row in result["rows"].items():
        base = result["rows"][(size, 1)]["frames_per_s"]
        print(
            f"| {size} | {batch} | {row['preprocess_ms_per_frame']:.2f} | {row['forward_ms_per_frame']:.2f} "
            f"| {row['frames_per_s']:.0f} | {row['frames_per_s'] / base:.1f}x |"
        )
    speedup = result["generate_s"] / result["logits_s"]
    print(
        f"\nbatch 1, 224 px: logits path {1e3 * result['logits_s']:.1f} ms, generate(max_new_tokens=2)+parse "
        f"{1e3 * result['generate_s']:.1f} ms -> logits path {speedup:.2f}x faster"
    )
    print(
        f"preprocessing at 224 px: fast path {1e3 * result['fast_pre_s']:.3f} ms/frame, reference PIL processor "
        f"{1e3 * result['reference_pre_s']:.2f} ms/frame ({result['reference_pre_s'] / result['fast_pre_s']:.0f}x)"
    )
    overhead = wrapped / bare - 1
    print(
        f"RewardWrapper(DummyRM) on VLARL/Reach-v0 (128 px), median step: bare {1e3 * bare:.3f} ms, wrapped "
        f"{1e3 * wrapped:.3f} ms -> overhead {100 * overhead:.1f} %"
    )
    print(f"peak resident memory: {peak_gb:.2f} GB")
    if args.out:
        rows = {f"{s}px_b{b}": row for (s, b), row in result["rows"].items()}
        with open(args.out, "w") as f:
            json.dump(
                {
                    "machine": machine,
                    "rows": rows,
                    "logits_vs_generate": speedup,
                    "wrapper_overhead": overhead,
                    "peak_rss_gb": peak_gb,
                    **{k: v for k, v in result.items() if k != "rows"},
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
