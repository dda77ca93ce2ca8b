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

The relation loss (:class:`RelationLoss`) is its companion one step further: at the answer
position, how the named object stands to the gripper and to its destination.
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


def colour_lookup(tokenizer) -> torch.Tensor:
    """``(V,) long``: token id → palette index of that colour word, -1 for other tokens (up to
    the largest colour word id)."""
    ids = colour_token_ids(tokenizer)
    lookup = torch.full((max(ids) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(ids)] = torch.arange(len(ids))
    return lookup


def palette_indices(lookup: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``(B, L) long``: the palette index of the colour word at each position, or -1."""
    inside = input_ids < len(lookup)
    return torch.where(inside, lookup[input_ids.clamp(max=len(lookup) - 1)], -1)


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
        self.register_buffer("lookup", colour_lookup(tokenizer), persistent=False)
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
        return palette_indices(self.lookup, input_ids)

    def forward(
        self, hidden_states, input_ids: torch.Tensor, colour_positions: torch.Tensor, grippers: torch.Tensor
    ) -> torch.Tensor | None:
        """The loss of one batch, or ``None`` when no colour word of it names an object in its frame.

        ``hidden_states``: the model's tuple (embeddings + one per layer); ``colour_positions
        (B, C, 3)`` the world position of each palette colour's object (NaN if absent);
        ``grippers (B, 2 or 3)`` the gripper's position (x/y are read)."""
        colours = self.colours(input_ids)
        rows, columns = (colours >= 0).nonzero(as_tuple=True)
        where = colour_positions[rows, colours[rows, columns], :2]
        known = ~torch.isnan(where).any(-1)
        if not bool(known.any()):
            return None
        rows, columns, where = rows[known], columns[known], where[known]
        hidden = hidden_states[self.layer][rows, columns].float()
        return torch.nn.functional.mse_loss(self.head(hidden), grounding_targets(where, grippers[rows, :2]))


def default_layer(num_layers: int) -> int:
    """The middle of the stack: early enough that the later layers can move the answer."""
    return max(1, int(np.ceil(num_layers / 2)))


RELATION_SCALE = 0.01  # metres: offsets are compressed as sign · log(1 + |offset| / scale)


def compress(offset: torch.Tensor) -> torch.Tensor:
    """``sign(x) · log(1 + |x| / RELATION_SCALE)``: centimetre resolution near zero (where a
    completion is decided), and room for the whole table (30 cm → 3.4)."""
    return torch.sign(offset) * torch.log1p(offset.abs() / RELATION_SCALE)


def relation_targets(block: torch.Tensor, destination: torch.Tensor, gripper: torch.Tensor) -> torch.Tensor:
    """``(M, 8)``: the named object relative to the gripper and the destination relative to the
    named object (3-D each, :func:`compress`-ed), then the two distances (compressed). Inputs are
    ``(M, 3)`` world positions; for single-object instructions the destination is the object."""
    to_block, to_destination = block - gripper, destination - block
    distances = torch.stack([to_block.norm(dim=-1), to_destination.norm(dim=-1)], dim=-1)
    return torch.cat([compress(to_block), compress(to_destination), compress(distances)], dim=-1)


class RelationLoss(torch.nn.Module):
    """MSE of a linear head at the answer position (a PRM's last prompt token; a policy's last
    prompt position, where its first action token is predicted) against how the objects the
    instruction names stand to each other and to the gripper (:func:`relation_targets`).

    Whether a task is completed is a question about a relation — is the gripper on the named
    block, is the named block on the named pad — and a PRM trained on the completion label alone
    can answer it from shortcuts instead (the gripper low over *some* block; the gripper pushing
    a block): this loss makes the answer position carry the relation itself, so the answer
    tokens can read completion off it. A policy's next action depends on the same relation
    (where to push from is the block's position and the direction to the pad). The first
    colour word of the instruction names the object, the second (if any) the destination.
    Used during training only; not saved with the model.

    Args:
        tokenizer: the model's tokenizer (finds the colour words in ``input_ids``).
        hidden_size: the language model's width.
        layer: which hidden state to read (``num_layers`` = the last layer).
    """

    def __init__(self, tokenizer, hidden_size: int, layer: int):
        super().__init__()
        self.register_buffer("lookup", colour_lookup(tokenizer), persistent=False)
        self.layer = layer
        self.head = torch.nn.Linear(hidden_size, 8)

    @classmethod
    def for_model(cls, model, tokenizer) -> RelationLoss:
        """The loss for a Qwen2-VL ``model``, reading its last layer."""
        text = model.config.get_text_config()
        return cls(tokenizer, text.hidden_size, text.num_hidden_layers).to(next(model.parameters()).device)

    def named(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, 2) long``: palette indices of the first and second colour words of each prompt
        (the first twice when there is one; -1 when there is none)."""
        colours = palette_indices(self.lookup, input_ids)
        found = colours >= 0
        order = torch.cumsum(found.long(), dim=1)
        first = torch.where(found & (order == 1), colours, -1).max(dim=1).values
        second = torch.where(found & (order == 2), colours, -1).max(dim=1).values
        return torch.stack([first, torch.where(second >= 0, second, first)], dim=1)

    def forward(
        self,
        hidden_states,
        input_ids: torch.Tensor,
        colour_positions: torch.Tensor,
        grippers: torch.Tensor,
        position: int = -1,
    ) -> torch.Tensor | None:
        """The loss of one batch, or ``None`` when no prompt of it names objects found in its frame.

        ``colour_positions (B, C, 3)``: world position of each palette colour's object (NaN if
        absent); ``grippers (B, 3)``: the gripper's position; ``position``: the sequence index
        read (-1, the answer position of a PRM prompt; a policy reads the last prompt position,
        before the teacher-forced action tokens)."""
        named = self.named(input_ids)
        rows = torch.arange(len(named), device=named.device)
        known = named[:, 0] >= 0
        block = colour_positions[rows, named[:, 0].clamp(min=0)]
        destination = colour_positions[rows, named[:, 1].clamp(min=0)]
        known &= ~(torch.isnan(block).any(-1) | torch.isnan(destination).any(-1))
        if not bool(known.any()):
            return None
        targets = relation_targets(block[known], destination[known], grippers[known, :3])
        hidden = hidden_states[self.layer][known, position].float()
        return torch.nn.functional.mse_loss(self.head(hidden), targets)
