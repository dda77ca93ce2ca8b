"""``VLLMProcessRM``: the Qwen2-VL PRM served by vLLM (GPU machines; ``pip install '.[vllm]'``).

The whole batch of frames goes to vLLM in one ``generate`` call asking for one token restricted
to the two answer tokens, with their log-probabilities; every prompt's output is read (not just
the first one) and turned into P(positive) exactly as :class:`reward.qwen_prm.QwenProcessRM`
does from the logits. Same prompt, answer tokens and ``prm_config.json`` handling.
"""

from __future__ import annotations

import numpy as np

from reward.base import ProcessRewardModel
from reward.qwen_prm import answer_token_ids, prompt_and_answers
from vla_rl.qwen import vllm_engine


def prm_sampling_kwargs(answer_ids: list[int]) -> dict:
    """``SamplingParams`` arguments: one answer token, both answers' log-probabilities."""
    return {
        "n": 1,
        "max_tokens": 1,
        "temperature": 1.0,
        "allowed_token_ids": list(answer_ids),
        "logprobs": len(answer_ids),
        "detokenize": False,
    }


def parse_prm_outputs(outputs, answer_ids: list[int]) -> np.ndarray:
    """``float32 (B,)`` P(positive) from the vLLM outputs of a batch, one per prompt."""
    positive, negative = answer_ids
    return np.array(
        [vllm_engine.two_way_probability(vllm_engine.position_logprobs(o, 0), positive, negative) for o in outputs],
        np.float32,
    )


class VLLMProcessRM(ProcessRewardModel):
    """Scores frames with vLLM; arguments as :class:`reward.qwen_prm.QwenProcessRM`."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        adapter_path: str | None = None,
        prompt_template: str | None = None,
        answer_tokens=None,
        gpu_memory_utilization: float = 0.3,
        seed: int = 0,
    ):
        vllm = vllm_engine.require_vllm()
        from vla_rl.qwen.loading import read_checkpoint_config
        from vla_rl.qwen.processor import QwenImageTextProcessor

        read_checkpoint_config(model_path, "--prm_model_name_or_path")
        self.prompt_template, self.answer_tokens = prompt_and_answers(
            model_path, adapter_path, prompt_template, answer_tokens
        )
        self.processor = QwenImageTextProcessor.from_pretrained(model_path)
        self.answer_ids = answer_token_ids(self.processor.tokenizer, self.answer_tokens)
        self.lora = None
        if adapter_path is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("prm", 1, adapter_path)
        self.llm = vllm_engine.make_llm(
            model_path, gpu_memory_utilization, seed=seed, enable_lora=adapter_path is not None
        )
        self.sampling = vllm.SamplingParams(**prm_sampling_kwargs(self.answer_ids))

    def _score(self, frames, instructions, infos):
        texts = [self.prompt_template.format(instruction=text) for text in instructions]
        outputs = self.llm.generate(
            vllm_engine.requests(self.processor, frames, texts), self.sampling, lora_request=self.lora, use_tqdm=False
        )
        return parse_prm_outputs(outputs, self.answer_ids)
