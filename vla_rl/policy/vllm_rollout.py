"""The vLLM rollout backend of the VLA policy (``--rollout_backend vllm``, GPU machines).

vLLM samples the action tokens of the whole batch (restricted to the 256 action-bin ids, with
temperature); the trainer's own model then scores those tokens in one teacher-forced pass, so
the PPO ratio's old log-probabilities and the values come from exactly the weights being
trained (vLLM's bf16 kernels differ slightly; the gap is logged). After every PPO update the
trainer's weights — LoRA merged first — are loaded into the engine, and the sync is verified:
greedy actions of a probe batch from vLLM must agree with the trainer's argmax after the sync.
"""

from __future__ import annotations

import logging
import tempfile

import numpy as np
import torch

from vla_rl.policy.action_tokenizer import NUM_BINS
from vla_rl.qwen import vllm_engine

logger = logging.getLogger("vla_rl.train")


def action_sampling_kwargs(first_id: int, vocab_size: int, action_dim: int, temperature: float, seed=None) -> dict:
    """``SamplingParams`` arguments: ``action_dim`` action-bin tokens, each with its log-probability."""
    return {
        "n": 1,
        "temperature": temperature,
        "top_p": 1.0,
        "max_tokens": action_dim,
        "min_tokens": action_dim,
        "ignore_eos": True,
        "allowed_token_ids": list(range(first_id, vocab_size)),
        "logprobs": 1,
        "detokenize": False,
        "seed": seed,
    }


def parse_action_outputs(outputs, action_dim: int, first_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``token_ids (B, D) int64`` and the summed ``logprobs (B,)`` of every prompt's output."""
    token_ids = np.empty((len(outputs), action_dim), np.int64)
    logprobs = np.empty(len(outputs))
    for i, output in enumerate(outputs):
        ids = [int(t) for t in output.outputs[0].token_ids]
        if len(ids) != action_dim or min(ids) < first_id or max(ids) >= first_id + NUM_BINS:
            raise ValueError(f"vLLM output {i} is {ids}: expected {action_dim} action-bin ids (>= {first_id}).")
        token_ids[i] = ids
        logprobs[i] = sum(vllm_engine.position_logprobs(output, k)[t] for k, t in enumerate(ids))
    return token_ids, logprobs


def merged_named_tensors(model) -> list[tuple[str, torch.Tensor]]:
    """The model's weights under Hugging Face names, with a peft LoRA merged into them."""
    if not hasattr(model, "merge_adapter"):
        return [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
    model.merge_adapter()
    try:
        state = model.get_base_model().state_dict()
        return [
            (name.replace(".base_layer", ""), tensor.detach().clone())
            for name, tensor in state.items()
            if "lora_" not in name
        ]
    finally:
        model.unmerge_adapter()


class VLLMRollout:
    """``act``/``values_of`` like :class:`~vla_rl.policy.vla.VLAPolicy`, sampling with vLLM."""

    def __init__(self, policy, gpu_memory_utilization: float = 0.3, seed: int = 0, agreement: float = 0.9):
        self.vllm = vllm_engine.require_vllm()
        self.policy = policy
        self.agreement = agreement
        self.seed = seed
        self.calls = 0
        self.logprob_gap = 0.0  # mean |trainer - vLLM| summed log-probability of the last batch
        self.folder = tempfile.TemporaryDirectory(prefix="vla-rl-vllm-")
        model = policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else policy.model
        model.save_pretrained(self.folder.name)
        policy.processor.save_pretrained(self.folder.name)
        self.llm = vllm_engine.make_llm(self.folder.name, gpu_memory_utilization, seed=seed)
        self.sync()

    def _state_ids(self, states):
        if self.policy.state_stats is None:
            return None
        return self.policy.state_token_ids(states).numpy()

    def _generate(self, frames, instructions, states, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        tokenizer = self.policy.action_tokenizer
        texts = [self.policy.prompt_template.format(instruction=text) for text in instructions]
        self.calls += 1
        params = self.vllm.SamplingParams(
            **action_sampling_kwargs(
                tokenizer.first_id, tokenizer.vocab_size, tokenizer.action_dim, temperature, self.seed + self.calls
            )
        )
        requests = vllm_engine.requests(self.policy.processor, frames, texts, self._state_ids(states))
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return parse_action_outputs(outputs, tokenizer.action_dim, tokenizer.first_id)

    @torch.no_grad()
    def act(
        self, frames, instructions, states=None, temperature: float = 1.0, greedy: bool = False, greedy_decoding="mean"
    ) -> dict:
        if greedy and greedy_decoding != "argmax":  # vLLM's greedy search takes the most likely bin
            return self.policy.act(frames, instructions, states, temperature, greedy, greedy_decoding)
        token_ids, vllm_logprobs = self._generate(frames, instructions, states, 0.0 if greedy else temperature)
        token_ids = torch.from_numpy(token_ids)
        step = self.policy.max_batch
        scored = [
            self.policy.evaluate(
                frames[i : i + step],
                instructions[i : i + step],
                token_ids[i : i + step],
                None if states is None else states[i : i + step],
                temperature,
            )
            for i in range(0, len(frames), step)
        ]
        logprobs = torch.cat([s["logprobs"] for s in scored]).float().cpu()
        self.logprob_gap = float(np.abs(logprobs.numpy() - vllm_logprobs).mean())
        return {
            "actions": self.policy.action_tokenizer.decode(token_ids.numpy()),
            "token_ids": token_ids,
            "logprobs": logprobs,
            "values": torch.cat([s["values"] for s in scored]).float().cpu(),
        }

    def values_of(self, frames, instructions, states=None):
        return self.policy.values_of(frames, instructions, states)

    def sync(self, probe: tuple | None = None) -> dict:
        """Load the trainer's (merged) weights into vLLM; with a probe batch ``(frames,
        instructions, states)``, check greedy agreement before and after."""
        before = self._greedy_agreement(*probe) if probe else None
        vllm_engine.load_weights(self.llm, merged_named_tensors(self.policy.model))
        metrics = {}
        if probe:
            after = self._greedy_agreement(*probe)
            metrics = {"perf/vllm_agreement_before_sync": before, "perf/vllm_agreement_after_sync": after}
            if after < self.agreement:
                raise RuntimeError(
                    f"vLLM weight sync failed: greedy actions agree with the trainer on {after:.0%} of tokens "
                    f"(before the sync: {before:.0%}); expected >= {self.agreement:.0%}."
                )
        metrics["perf/vllm_logprob_gap"] = self.logprob_gap
        return metrics

    @torch.no_grad()
    def _greedy_agreement(self, frames, instructions, states) -> float:
        token_ids, _ = self._generate(frames, instructions, states, 0.0)
        logits, _ = self.policy.forward_actions(frames, instructions, torch.from_numpy(token_ids), states)
        trainer = logits.argmax(-1).cpu().numpy() + self.policy.action_tokenizer.first_id
        return float((trainer == token_ids).mean())
