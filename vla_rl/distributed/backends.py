"""Which engines a run uses: Ray env workers, the vLLM or transformers backends, FSDP.

``--use_ray``, ``--rollout_backend``, ``--prm_backend`` and ``--fsdp`` default to ``auto``;
:func:`resolve_backends` turns them into one decision with the reason for each part, which the
trainer prints when it starts. ``auto`` picks an engine only where it can help:

- Ray: installed, and a cluster address is given, a GPU is present, or the machine has at
  least 4 CPUs (on fewer, env workers cost more than they save: the policy keeps the cores busy).
- vLLM: importable and CUDA present.
- FSDP: launched by ``torchrun`` (``WORLD_SIZE`` > 1) or as Ray Train workers (``--fsdp_ranks N``);
  each rank steps its own envs (in-process, or on its own Ray env workers in the run's shared
  cluster, with one PRM server for all ranks) with the transformers rollout, and the ranks train
  one sharded policy (:mod:`vla_rl.distributed.fsdp`).

An explicit choice that cannot work fails before anything heavy loads, with the fix.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

AUTO_CHOICES = ("auto", "True", "False")
BACKENDS = ("auto", "hf", "vllm")
MIN_CPUS_FOR_RAY = 4
LAUNCHER_ENV = "VLA_RL_LAUNCHER"  # what started the ranks of this process group (default: torchrun)
VLLM_HINT = "vLLM is not installed: pip install '.[vllm]' on a CUDA machine (it needs a GPU)."


def installed(name: str) -> bool:
    """Whether the optional package ``name`` (ray, vllm, ...) can be imported."""
    return importlib.util.find_spec(name) is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Backends:
    use_ray: bool
    rollout: str  # "hf" | "vllm"
    prm: str  # "hf" | "vllm"
    fsdp: bool
    reasons: list[str] = field(default_factory=list)
    launch_ranks: int = 0  # > 1: this process launches that many FSDP ranks as Ray Train workers

    @property
    def ranks(self) -> int:
        return self.launch_ranks if self.launch_ranks > 1 else world_size()

    def describe(self) -> str:
        engines = (
            f"env workers: {'Ray actors' if self.use_ray else 'in-process'}; rollout: "
            f"{'vLLM' if self.rollout == 'vllm' else 'transformers'}; PRM: "
            f"{'vLLM' if self.prm == 'vllm' else 'transformers'}; training: "
            f"{'FSDP over ' + str(self.ranks) + ' processes' if self.fsdp else 'single-process PyTorch'}"
        )
        return f"{engines} ({'; '.join(self.reasons)})" if self.reasons else engines


def check_choice(value: str, choices: tuple, flag: str) -> None:
    if value not in choices:
        raise ValueError(f"{flag} must be one of {list(choices)}, got {value!r}.")


def resolve_backends(
    use_ray: str, rollout_backend: str, prm_backend: str, fsdp: str, ray_address: str = "", fsdp_ranks: int = 0
) -> Backends:
    """The engines of a run; raises ``ValueError``/``ImportError`` for explicit choices that
    cannot work here. ``fsdp_ranks`` > 1 launches that many ranks as Ray Train workers."""
    check_choice(use_ray, AUTO_CHOICES, "--use_ray")
    check_choice(rollout_backend, BACKENDS, "--rollout_backend")
    check_choice(prm_backend, BACKENDS, "--prm_backend")
    check_choice(fsdp, AUTO_CHOICES, "--fsdp")
    reasons = []
    cuda = _cuda()
    address = ray_address or os.environ.get("RAY_ADDRESS", "")
    ray_installed = installed("ray")
    if use_ray == "True" and not ray_installed:
        raise ImportError("--use_ray True: Ray is not installed: pip install '.[dist]'.")
    if use_ray == "auto":
        cpus = os.cpu_count() or 1
        ray = ray_installed and bool(address or cuda or cpus >= MIN_CPUS_FOR_RAY)
        if not ray_installed:
            reasons.append("Ray not installed")
        elif not ray:
            reasons.append(f"{cpus} CPUs, no GPU and no --ray_address: Ray would not help")
    else:
        ray = use_ray == "True"

    vllm_ok = installed("vllm") and cuda
    chosen = {}
    for flag, value in (("--rollout_backend", rollout_backend), ("--prm_backend", prm_backend)):
        if value == "vllm" and not installed("vllm"):
            raise ImportError(f"{flag} vllm: {VLLM_HINT}")
        if value == "vllm" and not cuda:
            raise ValueError(f"{flag} vllm needs a CUDA device; use {flag} hf on this machine.")
        chosen[flag] = "vllm" if value == "vllm" or (value == "auto" and vllm_ok) else "hf"
    if "auto" in (rollout_backend, prm_backend) and not vllm_ok:
        reasons.append("no CUDA device" if not cuda else "vLLM not installed")

    world = world_size()
    if fsdp_ranks > 1 and world > 1:
        raise ValueError(f"--fsdp_ranks {fsdp_ranks} under torchrun ({world} processes): launch one or the other.")
    if fsdp_ranks == 1 or fsdp_ranks < 0:
        raise ValueError(f"--fsdp_ranks must be 0 (torchrun's processes) or >= 2, got {fsdp_ranks}.")
    if fsdp_ranks > 1 and not ray_installed:
        raise ImportError(f"--fsdp_ranks {fsdp_ranks} launches Ray Train workers: pip install '.[dist]'.")
    if fsdp_ranks > 1 and fsdp == "False":
        raise ValueError(f"--fsdp False with --fsdp_ranks {fsdp_ranks}: use --fsdp auto or True.")
    if fsdp == "True" and world < 2 and fsdp_ranks < 2:
        raise ValueError(
            "--fsdp True needs several processes: torchrun --nproc_per_node N -m vla_rl.train ..., or --fsdp_ranks N "
            "(Ray Train workers), or --fsdp auto to train in one process."
        )
    if fsdp == "False" and world > 1:
        raise ValueError(f"--fsdp False but torchrun started {world} processes; launch one process, or --fsdp auto.")
    sharded = world > 1 or fsdp_ranks > 1
    if sharded:
        launcher = os.environ.get(LAUNCHER_ENV, "torchrun")
        reasons.append(
            f"{fsdp_ranks} Ray Train workers (--fsdp_ranks)" if fsdp_ranks > 1 else f"{world} {launcher} ranks"
        )
        if rollout_backend == "vllm":
            raise ValueError("--rollout_backend vllm with FSDP is not supported yet; use --rollout_backend hf.")
        if chosen["--rollout_backend"] == "vllm":
            chosen["--rollout_backend"] = "hf"
            reasons.append("FSDP ranks roll out with transformers")
    launch = fsdp_ranks if fsdp_ranks > 1 else 0
    return Backends(ray, chosen["--rollout_backend"], chosen["--prm_backend"], sharded, reasons, launch)
