"""``VLAPolicy``: a Qwen2-VL-family model that answers an image + instruction with action tokens.

The prompt is the chat template with the frame and ``What action should the robot take to
{instruction}?``; the answer is ``action_dim`` tokens, each restricted to the 256 action-bin
ids (the last ids of the vocabulary). The policy's distribution over a token is the softmax of
the action-id logits divided by the temperature; an action's log-probability is the sum over
its tokens. A linear value head on the hidden state of the last prompt position is the critic.

Optionally the policy also reads the proprioceptive state: each state dimension is normalised
with the dataset's q01/q99 and written as one bin token (the same 256 ids as the actions) after
the prompt, so the answer follows ``state_dim`` state tokens.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vla_rl import keys
from vla_rl.policy.action_tokenizer import GREEDY_DECODINGS, NUM_BINS, ActionStats, ActionTokenizer

DEFAULT_PROMPT = "What action should the robot take to {instruction}?"


class _ActionTokensOnly:
    """A generation logits processor that masks every id but the action bins."""

    def __init__(self, first_id: int, vocab_size: int):
        self.first_id, self.vocab_size = first_id, vocab_size

    def __call__(self, input_ids, scores):
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.first_id : self.vocab_size] = scores[:, self.first_id : self.vocab_size]
        return masked


class _ExpectedBin:
    """A generation logits processor for deterministic decoding: it keeps only the bin nearest
    the expected bin of the token's distribution (which greedy search then picks).

    Action labels are continuous values spread over neighbouring bins, while a saturated action
    (-1 or +1) is a single bin; the most likely bin is then often a saturated end although most
    of the mass lies between them. The expected bin is the distribution's mean action."""

    def __init__(self, first_id: int):
        self.first_id = first_id

    def __call__(self, input_ids, scores):
        probs = torch.softmax(scores[:, self.first_id : self.first_id + NUM_BINS].float(), -1)
        mean = (probs * torch.arange(NUM_BINS, dtype=probs.dtype, device=probs.device)).sum(-1)
        chosen = self.first_id + mean.round().long().clamp(0, NUM_BINS - 1)
        kept = torch.full_like(scores, float("-inf"))
        kept[torch.arange(len(scores), device=scores.device), chosen] = 0.0
        return kept


class VLAPolicy(nn.Module):
    """Action sampling and teacher-forced evaluation on a Qwen2-VL-family model.

    Args:
        model: a ``Qwen2VLForConditionalGeneration`` (or Qwen2.5-VL) in train or eval mode.
        processor: a :class:`vla_rl.qwen.processor.QwenImageTextProcessor` for the model.
        action_tokenizer: maps actions to the last 256 vocabulary ids and back.
        prompt_template: the user text; must contain ``{instruction}``.
        max_batch: frames per forward pass (``--local_rollout_forward_batch_size``).
        state_stats: q01/q99 of the proprioceptive state; when given, the policy reads the
            state as bin tokens after the prompt and every call needs ``states``.
    """

    def __init__(
        self,
        model,
        processor,
        action_tokenizer: ActionTokenizer,
        prompt_template: str = DEFAULT_PROMPT,
        max_batch: int = 16,
        state_stats: ActionStats | None = None,
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
        self.state_stats = state_stats
        self.value_trunk_grad = True  # False: the value loss trains the value head only
        self.image_size: int | None = None  # the frame size the policy was trained at, if known
        self.camera = keys.FRONT_CAMERA  # the view it observes (keys.VIEWS), from its training frames
        self.tasks: list[str] | None = None  # the tasks it was trained on, if known
        hidden = model.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.value_head.to(next(model.parameters()).device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def state_token_ids(self, states: np.ndarray) -> torch.Tensor:
        """Bin token ids ``(B, state_dim)`` of raw proprioceptive states."""
        normalized = self.state_stats.normalize(np.asarray(states, np.float64))
        return torch.from_numpy(self.action_tokenizer.bins(normalized) + self.action_tokenizer.first_id)

    def _inputs(self, frames: np.ndarray, instructions: list[str], states: np.ndarray | None = None) -> dict:
        if len(frames) != len(instructions):
            raise ValueError(f"got {len(frames)} frames but {len(instructions)} instructions.")
        prompts = [self.prompt_template.format(instruction=text) for text in instructions]
        inputs = self.processor(frames, prompts)
        if self.state_stats is not None:
            if states is None or len(states) != len(frames):
                raise ValueError("this policy reads the proprioceptive state: pass one state per frame.")
            inputs = _append_tokens(inputs, self.state_token_ids(states))
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _action_logits(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        first = self.action_tokenizer.first_id
        return logits[..., first : first + NUM_BINS].float() / temperature

    @torch.no_grad()
    def act(
        self,
        frames: np.ndarray,
        instructions: list[str],
        states: np.ndarray | None = None,
        temperature: float = 1.0,
        greedy: bool = False,
        greedy_decoding: str = "mean",
    ) -> dict:
        """Sample actions for a batch of frames; ``greedy`` decodes deterministically instead,
        each token in turn the bin nearest its distribution's expected bin
        (``greedy_decoding="mean"``) or its most likely bin (``"argmax"``).

        Returns ``actions (B, D) float64`` (un-normalised), ``token_ids (B, D) long``,
        ``logprobs (B,)`` (sum over the action's tokens, at ``temperature``) and ``values (B,)``."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if greedy_decoding not in GREEDY_DECODINGS:
            raise ValueError(f"greedy_decoding must be one of {GREEDY_DECODINGS}, got {greedy_decoding!r}.")
        mean = greedy and greedy_decoding == "mean"
        step = self.max_batch
        outputs = [
            self._act_chunk(
                frames[i : i + step],
                instructions[i : i + step],
                None if states is None else states[i : i + step],
                temperature,
                greedy,
                mean,
            )
            for i in range(0, len(frames), step)
        ]
        merged = {k: torch.cat([o[k] for o in outputs]) for k in ("token_ids", "logprobs", "values")}
        merged["actions"] = self.action_tokenizer.decode(merged["token_ids"].cpu().numpy())
        return merged

    def _act_chunk(self, frames, instructions, states, temperature, greedy, mean) -> dict:
        inputs = self._inputs(frames, instructions, states)
        dim = self.action_tokenizer.action_dim
        processors = [_ActionTokensOnly(self.action_tokenizer.first_id, self.action_tokenizer.vocab_size)]
        if mean:
            processors.append(_ExpectedBin(self.action_tokenizer.first_id))
        out = self.model.generate(
            **inputs,
            max_new_tokens=dim,
            min_new_tokens=dim,
            do_sample=not greedy,
            temperature=temperature,
            top_k=NUM_BINS,
            top_p=1.0,
            logits_processor=processors,
            output_logits=True,
            output_hidden_states=True,
            return_dict_in_generate=True,
            pad_token_id=self.processor.pad_token_id,
            eos_token_id=None,
            synced_gpus=False,  # every call generates exactly ``dim`` tokens; FSDP ranks roll out independently
        )
        token_ids = out.sequences[:, -dim:]
        logits = self._action_logits(torch.stack(out.logits, dim=1), temperature)  # (B, D, 256)
        logprobs = torch.log_softmax(logits, -1).gather(-1, (token_ids - self.action_tokenizer.first_id)[..., None])
        prompt_hidden = out.hidden_states[0][-1][:, -1, :]
        values = self.value_head(prompt_hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return {"token_ids": token_ids, "logprobs": logprobs.squeeze(-1).sum(-1), "values": values.float()}

    def forward_actions(
        self,
        frames: np.ndarray,
        instructions: list[str],
        token_ids: torch.Tensor,
        states: np.ndarray | None = None,
        return_hidden: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Teacher-forced action-bin logits ``(B, D, 256)`` (temperature 1) and ``values (B,)``,
        with gradients: the forward pass of both behaviour cloning and PPO. ``return_hidden``
        adds the model's hidden states (embeddings + one per layer, each ``(B, L, hidden)``)
        and the ``input_ids (B, L)`` they belong to."""
        inputs = self._inputs(frames, instructions, states)
        token_ids = token_ids.to(self.device)
        dim = token_ids.shape[1]
        prompt_length = inputs["input_ids"].shape[1]
        inputs = _append_tokens(inputs, token_ids)
        out = self.model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=dim + 1)
        logits = self._action_logits(out.logits[:, :dim], 1.0)  # positions predicting each token
        hidden = out.hidden_states[-1][:, prompt_length - 1, :]
        prompt_hidden = hidden if self.value_trunk_grad else hidden.detach()
        values = self.value_head(prompt_hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        if return_hidden:
            return logits, values.float(), out.hidden_states, inputs["input_ids"]
        return logits, values.float()

    @torch.no_grad()
    def values_of(self, frames: np.ndarray, instructions: list[str], states: np.ndarray | None = None) -> torch.Tensor:
        """``values (B,)`` of observations (a prompt-only forward, no generation)."""
        values = []
        for i in range(0, len(frames), self.max_batch):
            inputs = self._inputs(
                frames[i : i + self.max_batch],
                instructions[i : i + self.max_batch],
                None if states is None else states[i : i + self.max_batch],
            )
            out = self.model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1)
            hidden = out.hidden_states[-1][:, -1, :].to(self.value_head.weight.dtype)
            values.append(self.value_head(hidden).squeeze(-1).float())
        return torch.cat(values)

    def evaluate(
        self,
        frames: np.ndarray,
        instructions: list[str],
        token_ids: torch.Tensor,
        states: np.ndarray | None = None,
        temperature: float = 1.0,
    ) -> dict:
        """Teacher-forced ``logprobs (B,)``, ``entropy (B,)`` (summed over tokens) and
        ``values (B,)`` of given action tokens — with gradients, for the PPO update."""
        logits, values = self.forward_actions(frames, instructions, token_ids, states)
        log_probs = torch.log_softmax(logits / temperature, -1)
        index = (token_ids.to(self.device) - self.action_tokenizer.first_id)[..., None]
        chosen = log_probs.gather(-1, index).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return {"logprobs": chosen.sum(-1), "entropy": entropy.sum(-1), "values": values}


def _append_tokens(inputs: dict, token_ids: torch.Tensor) -> dict:
    """``inputs`` with ``token_ids (B, K)`` appended after every (left-padded) prompt."""
    token_ids = token_ids.to(inputs["input_ids"].device)
    ones = torch.ones_like(token_ids, dtype=inputs["attention_mask"].dtype)
    return {
        **inputs,
        "input_ids": torch.cat([inputs["input_ids"], token_ids], dim=1),
        "attention_mask": torch.cat([inputs["attention_mask"], ones], dim=1),
        "mm_token_type_ids": torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(token_ids).int()], dim=1),
    }
