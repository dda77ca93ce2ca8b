"""The ranks of a data-parallel (FSDP) PPO run, and the few collectives the trainer needs.

A single-process run is ``Ranks()`` (rank 0 of 1): every collective is the identity there, so
the trainer has one code path. Under ``torchrun`` each rank steps its own envs (``--num_envs``
per rank, different seeds) and the ranks meet in the PPO update (FSDP's all-gathers and gradient
reduce-scatters), in these reductions of counts and metrics, and in checkpoint saves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _device(self) -> torch.device:
        return (
            torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        )

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        if self.world == 1:
            return [float(v) for v in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def max(self, value: int) -> int:
        if self.world == 1:
            return int(value)
        tensor = torch.tensor([value], dtype=torch.int64, device=self._device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


SINGLE = Ranks()


def join_ranks() -> Ranks:
    """The torchrun process group as :class:`Ranks` (initialised here if needed)."""
    from vla_rl.distributed.fsdp import init_distributed

    rank, world = init_distributed()
    return Ranks(rank, world)
