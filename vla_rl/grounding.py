"""Grounding loss: at every colour word of the prompt, where the object of that colour is.

Behaviour cloning alone does not teach a from-scratch VLA to bind the instruction's colour
word to the object of that colour: the action positions would have to carry the colour from
the word to a query over the image tokens (two hops), and neither hop pays off before the
other exists, so the model learns the action averaged over the objects (bench/README.md).
This loss makes the first hop direct and dense: a linear head reads, from the hidden state of
an intermediate layer *at the colour word's own position*, where that colour's object is — its
x/y relative to the gripper (per 10 cm) and in the world (per 15 cm). The colour word can only
answer by attending to the image tokens that show its colour; the later layers then copy the
answer to the action positions, one fixed-position hop that cloning finds. The head is used
during cloning only and is not saved.
"""

from __future__ import annotations

import numpy as np
import torch

from envs.scene import COLOUR_NAMES

RELATIVE_SCALE = 0.10  # metres per unit of the relative x/y targets
ABSOLUTE_SCALE = 0.15  # metres per unit of the absolute x/y targets


def colour_token_ids(tokenizer) -> list[int]:
    """The token id of each palette colour word as it appears inside a prompt (``" red"``);
    raises if a colour is not a single token (the grounding loss reads one position per word)."""
    ids = []
    for name in COLOUR_NAMES:
        pieces = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(f"the tokenizer splits the colour word {name!r} into {len(pieces)} tokens.")
        ids.append(pieces[0])
    return ids


def grounding_targets(where: torch.Tensor, gripper: torch.Tensor) -> torch.Tensor:
    """``(M, 4)``: object x/y ``where (M, 2)`` relative to the gripper x/y ``gripper (M, 2)`` and
    absolute, scaled and clipped to [-4, 4]."""
    relative = (where - gripper) / RELATIVE_SCALE
    return torch.cat([relative, where / ABSOLUTE_SCALE], dim=-1).clamp(-4.0, 4.0)


class GroundingLoss(torch.nn.Module):
    """MSE of a per-token linear head at the prompt's colour words against the positions of
    their objects.

    Args:
        tokenizer: the policy's tokenizer (finds the colour words in ``input_ids``).
        hidden_size: the language model's width.
        layer: which hidden state to read (0 = embeddings, ``num_layers`` = the last layer).
    """

    def __init__(self, tokenizer, hidden_size: int, layer: int):
        super().__init__()
        ids = colour_token_ids(tokenizer)
        lookup = torch.full((max(ids) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(ids)] = torch.arange(len(ids))
        self.register_buffer("lookup", lookup, persistent=False)
        self.layer = layer
        self.head = torch.nn.Linear(hidden_size, 4)

    @classmethod
    def for_model(cls, model, tokenizer, layer: int = 0) -> GroundingLoss:
        """The loss for a Qwen2-VL ``model``, reading hidden state ``layer`` (0: :func:`default_layer`);
        raises if the model has fewer layers (the flag is ``--grounding_layer``)."""
        text = model.config.get_text_config()
        layers = text.num_hidden_layers
        layer = layer or default_layer(layers)
        if layer > layers:
            raise ValueError(f"--grounding_layer {layer}: the model has {layers} layers.")
        return cls(tokenizer, text.hidden_size, layer).to(next(model.parameters()).device)

    def colours(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L) long``: the palette index of the colour word at each position, or -1."""
        inside = input_ids < len(self.lookup)
        return torch.where(inside, self.lookup[input_ids.clamp(max=len(self.lookup) - 1)], -1)

    def forward(
        self, hidden_states, input_ids: torch.Tensor, colour_positions: torch.Tensor, grippers: torch.Tensor
    ) -> torch.Tensor | None:
        """The loss of one batch, or ``None`` when no colour word of it names an object in its frame.

        ``hidden_states``: the model's tuple (embeddings + one per layer); ``colour_positions
        (B, C, 3)`` the world position of each palette colour's object (NaN if absent);
        ``grippers (B, 2)`` the gripper's x/y."""
        colours = self.colours(input_ids)
        rows, columns = (colours >= 0).nonzero(as_tuple=True)
        where = colour_positions[rows, colours[rows, columns], :2]
        known = ~torch.isnan(where).any(-1)
        if not bool(known.any()):
            return None
        rows, columns, where = rows[known], columns[known], where[known]
        hidden = hidden_states[self.layer][rows, columns].float()
        return torch.nn.functional.mse_loss(self.head(hidden), grounding_targets(where, grippers[rows]))


def default_layer(num_layers: int) -> int:
    """The middle of the stack: early enough that the later layers can move the answer."""
    return max(1, int(np.ceil(num_layers / 2)))
