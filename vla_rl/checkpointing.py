"""Run checkpoints: ``checkpoints/iter_NNNNNN/`` under a run directory, written atomically,
with a ``latest`` pointer, and the policy a run starts from (fresh, resumed, with LoRA).

A checkpoint holds ``policy/`` (a plain policy checkpoint, LoRA merged, loadable by
``--vla_path`` and ``python -m vla_rl.evaluate``), ``adapter/`` (the LoRA adapter, when the
run trains one) and ``trainer_state.pt`` (counters, optimizer, RNG states).
"""

from __future__ import annotations

import copy
import os
import random
import shutil

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.pt"
KEEP_CHECKPOINTS = 3


def apply_lora(policy, rank: int, alpha: int, adapter_path: str | None = None):
    """Wrap the policy's language model linear layers with LoRA (vision tower frozen)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_path:
        policy.model = PeftModel.from_pretrained(policy.model, adapter_path, is_trainable=True)
        return
    targets = r"^model\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
    policy.model = get_peft_model(policy.model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets))


def exported_model(policy, lora: bool):
    """The model to save as a plain checkpoint (LoRA merged into a copy)."""
    if not lora:
        return policy.model
    return copy.deepcopy(policy.model).merge_and_unload()


def load_run_policy(config, resume_from: str | None):
    """The policy a run trains: ``--vla_path``, or the checkpoint being resumed; LoRA-wrapped
    when ``--lora_rank`` > 0 (resuming a LoRA run re-applies its saved adapter to the base); its
    vision tower fixed under ``--freeze_vision True``."""
    from vla_rl.policy.checkpoint import VALUE_HEAD_FILE, load_policy

    lora = config.policy.lora_rank > 0
    path = config.policy.vla_path
    if resume_from is not None and not lora:
        path = os.path.join(resume_from, "policy")
    policy = load_policy(path, device=config.policy.device, max_batch=config.policy.local_rollout_forward_batch_size)
    if config.policy.freeze_vision and not lora:
        policy.model.model.visual.requires_grad_(False)
    if lora:
        adapter = os.path.join(resume_from, "adapter") if resume_from is not None else None
        apply_lora(policy, config.policy.lora_rank, config.policy.lora_alpha, adapter)
        if resume_from is not None:
            from safetensors.torch import load_file

            head = load_file(os.path.join(resume_from, "policy", VALUE_HEAD_FILE), device=str(policy.device))
            policy.value_head.load_state_dict(head)
    return policy


def load_trainer_state(checkpoint: str) -> dict:
    return torch.load(os.path.join(checkpoint, TRAINER_STATE), weights_only=False)


def latest_checkpoint(run_dir: str) -> str | None:
    pointer = os.path.join(run_dir, CHECKPOINTS, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        path = os.path.join(run_dir, CHECKPOINTS, f.read().strip())
    return path if os.path.isfile(os.path.join(path, TRAINER_STATE)) else None


def resolve_policy_path(path: str) -> str:
    """The policy directory behind ``path``: a policy checkpoint itself, a training checkpoint
    (``iter_NNNNNN/``, whose ``policy/`` holds the merged weights) or a run directory (its latest
    checkpoint). Anything else comes back unchanged, for the loader to report."""
    latest = latest_checkpoint(path)  # a run directory (its config.json is the run's, not a model's)
    if latest:
        return os.path.join(latest, "policy")
    if os.path.isfile(os.path.join(path, "policy", "config.json")):
        return os.path.join(path, "policy")
    return path


def save_checkpoint(
    run_dir: str, iteration: int, policy, optimizer, state: dict, lora: bool, ranks=None, lora_template=None
) -> str:
    """``checkpoints/iter_NNNNNN/`` (policy/, adapter/ with LoRA, trainer_state.pt), written
    under a temporary name and renamed; then the ``latest`` pointer is replaced atomically.
    A crash at any point leaves the previous checkpoint and pointer intact.

    With several FSDP ``ranks`` (collective: every rank calls) the policy and the optimizer state
    are gathered into full tensors and rank 0 writes them: the policy in the single-process
    format, the optimizer state keyed by parameter name (``optimizer_full``), with every rank's
    RNG state; :func:`restore_trainer_state` loads it back into a run of the same world size. A
    sharded LoRA run passes rank 0's ``lora_template`` (:func:`vla_rl.distributed.fsdp.lora_template`)."""
    from vla_rl.atomic import atomic_directory
    from vla_rl.policy.checkpoint import save_policy

    name = f"iter_{iteration:06d}"
    folder = os.path.join(run_dir, CHECKPOINTS)
    sharded = ranks is not None and ranks.world > 1
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        from vla_rl.distributed.fsdp import save_full_policy

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        optimizer_full = get_optimizer_state_dict(policy, optimizer, options=full)  # rank 0 holds it
        rngs = ranks.gather(rng_state())
        if not ranks.is_main:
            save_full_policy(policy, None, template=lora_template)  # the gather is collective; rank 0 writes
            return os.path.join(folder, name)
    with atomic_directory(os.path.join(folder, name), overwrite=True) as tmp:
        os.makedirs(os.path.join(tmp, "policy"))
        if sharded:
            adapter = os.path.join(tmp, "adapter") if lora else None
            save_full_policy(policy, os.path.join(tmp, "policy"), template=lora_template, adapter_directory=adapter)
            trainer_state = {**state, "optimizer": None, "optimizer_full": optimizer_full, "rng_per_rank": rngs}
            trainer_state["fsdp_world_size"] = ranks.world
        else:
            save_policy(policy, os.path.join(tmp, "policy"), model=exported_model(policy, lora))
            trainer_state = {**state, "optimizer": optimizer.state_dict()}
        if lora and not sharded:
            policy.model.save_pretrained(os.path.join(tmp, "adapter"))
        torch.save({**trainer_state, "rng": rng_state()}, os.path.join(tmp, TRAINER_STATE))
    pointer = os.path.join(folder, LATEST)
    with open(f"{pointer}.tmp", "w") as f:
        f.write(name)
    os.replace(f"{pointer}.tmp", pointer)
    kept = sorted(d for d in os.listdir(folder) if d.startswith("iter_") and "." not in d)
    for old in kept[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(os.path.join(folder, old), ignore_errors=True)
    return os.path.join(folder, name)


def restore_trainer_state(saved: dict, policy, optimizer, ranks) -> None:
    """Load a checkpoint's optimizer and RNG state into this run (every rank calls). The run must
    have as many ranks as the one that wrote it: each rank resumes its own envs' RNG stream."""
    world = int(saved.get("fsdp_world_size", 1))
    if world != ranks.world:
        raise ValueError(
            f"--resume: the checkpoint was written by {world} FSDP rank(s) and this run has {ranks.world}; "
            f"resume with the same number of processes (torchrun --nproc_per_node {world})."
        )
    if world == 1:
        optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"])
        return
    if saved.get("optimizer_full") is None:
        raise ValueError("--resume: this FSDP checkpoint holds no optimizer state; start a new run from its policy/.")
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(policy, optimizer, saved["optimizer_full"], options=StateDictOptions(full_state_dict=True))
    set_rng_state(saved["rng_per_rank"][ranks.rank])


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
