"""``VLAPolicy``: a Qwen2-VL-family model that answers an image + instruction with action tokens.

The prompt is the chat template with the frame and ``What action should the robot take to
{instruction}?``; the answer is ``action_dim`` tokens, each restricted to the 256 action-bin
ids (the last ids of the vocabulary). The policy's distribution over a token is the softmax of
the action-id logits divided by the temperature; an action's log-probability is the sum over
its tokens. A linear value head on the hidden state of the last prompt position is the critic.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vla_rl.policy.action_tokenizer import NUM_BINS, ActionTokenizer

DEFAULT_PROMPT = "What action should the robot take to {instruction}?"


class _ActionTokensOnly:
    """A generation logits processor that masks every id but the action bins."""

    def __init__(self, first_id: int, vocab_size: int):
        self.first_id, self.vocab_size = first_id, vocab_size

    def __call__(self, input_ids, scores):
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.first_id : self.vocab_size] = scores[:, self.first_id : self.vocab_size]
        return masked


class VLAPolicy(nn.Module):
    """Action sampling and teacher-forced evaluation on a Qwen2-VL-family model.

    Args:
        model: a ``Qwen2VLForConditionalGeneration`` (or Qwen2.5-VL) in train or eval mode.
        processor: a :class:`vla_rl.qwen.processor.QwenImageTextProcessor` for the model.
        action_tokenizer: maps actions to the last 256 vocabulary ids and back.
        prompt_template: the user text; must contain ``{instruction}``.
        max_batch: frames per forward pass (``--local_rollout_forward_batch_size``).
    """

    def __init__(
        self,
        model,
        processor,
        action_tokenizer: ActionTokenizer,
        prompt_template: str = DEFAULT_PROMPT,
        max_batch: int = 16,
    ):
        super().__init__()
        if "{instruction}" not in prompt_template:
            raise ValueError(f"prompt_template must contain '{{instruction}}', got {prompt_template!r}.")
        if max_batch < 1:
            raise ValueError(f"local_rollout_forward_batch_size must be >= 1, got {max_batch}.")
        vocab = model.config.get_text_config().vocab_size
        if action_tokenizer.vocab_size != vocab:
            raise ValueError(
                f"the action tokenizer assumes vocab_size {action_tokenizer.vocab_size}, the model has {vocab}."
            )
        self.model = model
        self.processor = processor
        self.action_tokenizer = action_tokenizer
        self.prompt_template = prompt_template
        self.max_batch = max_batch
        hidden = model.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.value_head.to(next(model.parameters()).device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _inputs(self, frames: np.ndarray, instructions: list[str]) -> dict:
        prompts = [self.prompt_template.format(instruction=text) for text in instructions]
        inputs = self.processor(frames, prompts)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _action_logits(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        first = self.action_tokenizer.first_id
        return logits[..., first : first + NUM_BINS].float() / temperature

    @torch.no_grad()
    def act(self, frames: np.ndarray, instructions: list[str], temperature: float = 1.0, greedy: bool = False) -> dict:
        """Sample actions for a batch of frames.

        Returns ``actions (B, D) float64`` (un-normalised), ``token_ids (B, D) long``,
        ``logprobs (B,)`` (sum over the action's tokens, at ``temperature``) and ``values (B,)``."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        outputs = [
            self._act_chunk(frames[i : i + self.max_batch], instructions[i : i + self.max_batch], temperature, greedy)
            for i in range(0, len(frames), self.max_batch)
        ]
        merged = {k: torch.cat([o[k] for o in outputs]) for k in ("token_ids", "logprobs", "values")}
        merged["actions"] = self.action_tokenizer.decode(merged["token_ids"].cpu().numpy())
        return merged

    def _act_chunk(self, frames, instructions, temperature, greedy) -> dict:
        inputs = self._inputs(frames, instructions)
        dim = self.action_tokenizer.action_dim
        out = self.model.generate(
            **inputs,
            max_new_tokens=dim,
            min_new_tokens=dim,
            do_sample=not greedy,
            temperature=temperature,
            top_k=NUM_BINS,
            top_p=1.0,
            logits_processor=[_ActionTokensOnly(self.action_tokenizer.first_id, self.action_tokenizer.vocab_size)],
            output_logits=True,
            output_hidden_states=True,
            return_dict_in_generate=True,
            pad_token_id=self.processor.pad_token_id,
            eos_token_id=None,
        )
        token_ids = out.sequences[:, -dim:]
        logits = self._action_logits(torch.stack(out.logits, dim=1), temperature)  # (B, D, 256)
        logprobs = torch.log_softmax(logits, -1).gather(-1, (token_ids - self.action_tokenizer.first_id)[..., None])
        prompt_hidden = out.hidden_states[0][-1][:, -1, :]
        values = self.value_head(prompt_hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return {"token_ids": token_ids, "logprobs": logprobs.squeeze(-1).sum(-1), "values": values.float()}

    def evaluate(
        self, frames: np.ndarray, instructions: list[str], token_ids: torch.Tensor, temperature: float = 1.0
    ) -> dict:
        """Teacher-forced ``logprobs (B,)``, ``entropy (B,)`` (summed over tokens) and
        ``values (B,)`` of given action tokens — with gradients, for the PPO update."""
        inputs = self._inputs(frames, instructions)
        token_ids = token_ids.to(self.device)
        batch, dim = token_ids.shape
        prompt_length = inputs["input_ids"].shape[1]
        ones = torch.ones((batch, dim), dtype=inputs["attention_mask"].dtype, device=self.device)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], token_ids], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], ones], dim=1)
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(ones).int()], dim=1)
        out = self.model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=dim + 1)
        logits = self._action_logits(out.logits[:, :dim], temperature)  # positions predicting each token
        log_probs = torch.log_softmax(logits, -1)
        chosen = log_probs.gather(-1, (token_ids - self.action_tokenizer.first_id)[..., None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        prompt_hidden = out.hidden_states[-1][:, prompt_length - 1, :]
        values = self.value_head(prompt_hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return {"logprobs": chosen.sum(-1), "entropy": entropy.sum(-1), "values": values.float()}
