"""Actions <-> tokens, the OpenVLA way: 256 uniform bins per dimension on [-1, 1], each bin a
token id among the LAST 256 ids of the vocabulary; actions are first normalised per dimension
with the dataset's 1st/99th percentiles (q01/q99), which are saved with the checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

NUM_BINS = 256
STATS_FILE = "action_stats.json"
# Deterministic decodings of an action token: the bin nearest its expected bin, or its most likely bin.
GREEDY_DECODINGS = ("mean", "argmax")


@dataclass
class ActionStats:
    """Per-dimension q01/q99 of a dataset's actions; dimensions whose range is ~0 (never used by
    the data) are passed through unnormalised."""

    q01: np.ndarray
    q99: np.ndarray

    def __post_init__(self):
        self.q01 = np.asarray(self.q01, np.float64)
        self.q99 = np.asarray(self.q99, np.float64)
        if self.q01.shape != self.q99.shape or self.q01.ndim != 1:
            raise ValueError(f"q01 and q99 must be 1-D of equal length, got {self.q01.shape} and {self.q99.shape}.")
        if np.any(self.q99 < self.q01):
            raise ValueError("q99 must be >= q01 in every dimension.")

    @classmethod
    def from_actions(cls, actions: np.ndarray) -> ActionStats:
        """Statistics of ``actions (N, D)``."""
        actions = np.asarray(actions, np.float64)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"actions must be a non-empty (N, D) array, got shape {actions.shape}.")
        return cls(np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0))

    @property
    def scaled(self) -> np.ndarray:
        """Dimensions that are normalised (a non-degenerate q01..q99 range)."""
        return (self.q99 - self.q01) > 1e-6

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions, np.float64)
        span = np.where(self.scaled, self.q99 - self.q01, 1.0)
        normalized = np.where(self.scaled, 2.0 * (actions - self.q01) / span - 1.0, actions)
        return np.clip(normalized, -1.0, 1.0)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        normalized = np.clip(np.asarray(normalized, np.float64), -1.0, 1.0)
        return np.where(self.scaled, (normalized + 1.0) / 2.0 * (self.q99 - self.q01) + self.q01, normalized)

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, STATS_FILE), "w") as f:
            json.dump({"q01": self.q01.tolist(), "q99": self.q99.tolist()}, f, indent=2)

    @classmethod
    def load(cls, directory: str) -> ActionStats:
        path = os.path.join(directory, STATS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: the policy checkpoint lacks its action statistics.")
        with open(path) as f:
            data = json.load(f)
        return cls(np.array(data["q01"]), np.array(data["q99"]))


class ActionTokenizer:
    """Maps normalised actions in [-1, 1] to token ids ``vocab_size - 256 .. vocab_size - 1``.

    Args:
        vocab_size: the model's vocabulary size (embedding rows), not the tokenizer length.
        action_dim: action dimensions (7 for our tasks).
        stats: optional :class:`ActionStats` to (un)normalise raw actions.
    """

    def __init__(self, vocab_size: int, action_dim: int = 7, stats: ActionStats | None = None):
        if vocab_size <= NUM_BINS:
            raise ValueError(f"vocab_size={vocab_size} must exceed the {NUM_BINS} action bins.")
        if stats is not None and len(stats.q01) != action_dim:
            raise ValueError(f"stats have {len(stats.q01)} dimensions, the policy acts in {action_dim}.")
        self.vocab_size = vocab_size
        self.action_dim = action_dim
        self.stats = stats
        self.first_id = vocab_size - NUM_BINS
        self.bin_width = 2.0 / NUM_BINS
        self.centers = -1.0 + (np.arange(NUM_BINS) + 0.5) * self.bin_width

    def bins(self, normalized: np.ndarray) -> np.ndarray:
        """Bin index 0..255 of each normalised value."""
        index = np.floor((np.clip(normalized, -1.0, 1.0) + 1.0) / self.bin_width).astype(np.int64)
        return np.clip(index, 0, NUM_BINS - 1)

    def encode(self, actions: np.ndarray, normalized: bool = False) -> np.ndarray:
        """Token ids ``(..., action_dim)`` of raw actions (or already normalised ones)."""
        actions = np.asarray(actions, np.float64)
        if actions.shape[-1] != self.action_dim:
            raise ValueError(f"actions must end in dimension {self.action_dim}, got shape {actions.shape}.")
        if not normalized and self.stats is not None:
            actions = self.stats.normalize(actions)
        return self.bins(actions) + self.first_id

    def decode(self, token_ids, normalized: bool = False) -> np.ndarray:
        """Actions (bin centres, un-normalised unless ``normalized``) of token ids."""
        token_ids = np.asarray(token_ids, np.int64)
        if np.any((token_ids < self.first_id) | (token_ids >= self.vocab_size)):
            raise ValueError(f"token ids must be action tokens in [{self.first_id}, {self.vocab_size}).")
        values = self.centers[token_ids - self.first_id]
        if not normalized and self.stats is not None:
            values = self.stats.unnormalize(values)
        return values
