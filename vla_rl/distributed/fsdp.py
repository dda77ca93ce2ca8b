"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the VLA policy and its value head.

Every transformer block of the language model and of the vision tower is its own FSDP unit, the
rest of the model (embeddings, final norm, ``lm_head``) the root unit, and the value head one
more unit; gradients are averaged over ranks, so each rank computes the mean loss over its own
samples and the update equals single-process training on the union of the ranks' batches.
Ranks come from ``torchrun`` (NCCL on CUDA, gloo on CPU). Checkpoints are gathered into full
tensors and written by rank 0 in the single-process format (:func:`save_full_policy`), so any
checkpoint loads with :func:`vla_rl.policy.checkpoint.load_policy` regardless of how it was
trained. A LoRA policy (``--lora_rank``) is sharded the same way, its frozen base included; rank 0
keeps an unsharded CPU copy of the PeftModel (:func:`lora_template`) into which the gathered
weights are loaded at each save, so the adapter and the merged policy are written with peft's
own ``save_pretrained`` and ``merge_and_unload``.
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

BLOCK_SUFFIXES = ("DecoderLayer", "VisionBlock")


def init_distributed() -> tuple[int, int]:
    """Join the process group described by the torchrun environment; ``(rank, world_size)``."""
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def shard_policy(policy, mesh=None):
    """Shard ``policy.model`` (one unit per block) and ``policy.value_head`` across the ranks."""
    from torch.distributed.fsdp import fully_shard

    if mesh is None:
        from torch.distributed.device_mesh import init_device_mesh

        device = "cuda" if policy.device.type == "cuda" else "cpu"
        mesh = init_device_mesh(device, (dist.get_world_size(),))
    blocks = [m for m in policy.model.modules() if type(m).__name__.endswith(BLOCK_SUFFIXES)]
    if not blocks:
        raise ValueError(f"no transformer blocks ({BLOCK_SUFFIXES}) found in {type(policy.model).__name__}.")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(policy.model, mesh=mesh)
    fully_shard(policy.value_head, mesh=mesh)
    # FSDP picks its root unit as the first to run forward; generation can enter the vision
    # tower before the model's own forward, so fix the roots now (torch has no public call).
    for root in (policy.model, policy.value_head):
        root._get_fsdp_state()._lazy_init()
    return policy


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded DTensor gathered into a plain tensor (collective); plain tensors unchanged."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def full_state_dicts(policy) -> tuple[dict, dict]:
    """The model's and the value head's full state dicts, on CPU (collective: every rank calls;
    every rank gets the tensors)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=False)
    model = {k: v.detach().cpu() for k, v in get_model_state_dict(policy.model, options=options).items()}
    head = {k: v.detach().cpu() for k, v in get_model_state_dict(policy.value_head, options=options).items()}
    return model, head


def lora_template(policy):
    """An unsharded CPU copy of a LoRA policy's PeftModel on rank 0 (``None`` on other ranks);
    take it before :func:`shard_policy`."""
    return copy.deepcopy(policy.model).cpu() if dist.get_rank() == 0 else None


def save_full_policy(
    policy, directory: str | None, image_size: int | None = None, template=None, adapter_directory: str | None = None
) -> None:
    """Gather the sharded policy and write it from rank 0 into ``directory`` in the format of
    :func:`vla_rl.policy.checkpoint.save_policy` (collective: every rank calls; only rank 0's
    ``directory`` is used). With a LoRA ``template`` (see :func:`lora_template`) the gathered
    weights go into it, the adapter is written to ``adapter_directory`` and the policy merged."""
    from vla_rl.policy.checkpoint import save_policy

    model_state, head_state = full_state_dicts(policy)
    if dist.get_rank() == 0:
        if template is None:
            save_policy(policy, directory, image_size, state_dict=model_state, value_state=head_state)
        else:
            template.load_state_dict(model_state)
            template.save_pretrained(adapter_directory)
            merged = copy.deepcopy(template).merge_and_unload()
            save_policy(policy, directory, image_size, model=merged, value_state=head_state)
    dist.barrier()


def fsdp_units(policy) -> list:
    """The FSDP units of a sharded policy (every module with ``unshard``/``reshard``)."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in policy.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(policy):
    """Hold the full parameters on every rank for the block (no collectives inside it), so each
    rank can run its own rollout: forward passes whose number differs between ranks (generation,
    bootstrap values of truncated episodes). Collective on entry and exit."""
    roots = (policy.model, policy.value_head)
    units = fsdp_units(policy)
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield policy
    finally:
        for unit in units:  # back to FSDP's training defaults: roots keep their parameters after forward
            unit.set_reshard_after_forward(not any(unit is root for root in roots), recurse=False)
            unit.reshard()
