"""FSDP2 over 2 gloo processes: gradients, the updated weights and the saved checkpoint match
single-process training on the same batch."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vla_rl.ppo import ppo_loss

pytestmark = pytest.mark.timeout(600)
RNG = np.random.default_rng(3)
N = 8
FRAMES = RNG.integers(0, 256, (N, 56, 56, 3), dtype=np.uint8)
TEXTS = [f"touch the {c} block" for c in ("red", "green", "blue", "cyan")] * 2
ADVANTAGES = torch.from_numpy(RNG.normal(size=N)).float()
RETURNS = torch.from_numpy(RNG.normal(size=N)).float()
OLD_SHIFT = torch.from_numpy(RNG.normal(scale=0.1, size=N)).float()


def load(path):
    from vla_rl.policy.checkpoint import load_policy

    torch.manual_seed(0)
    policy = load_policy(path, device="cpu", max_batch=8)
    torch.nn.init.normal_(policy.value_head.weight, std=0.01)  # a non-trivial value head
    return policy


def step(policy, index, token_ids):
    """One clipped-PPO step on the samples ``index``; returns the loss."""
    out = policy.evaluate(FRAMES[index], [TEXTS[i] for i in index], token_ids[index])
    terms = ppo_loss(
        out["logprobs"],
        out["logprobs"].detach() + OLD_SHIFT[index],  # old log-probs differ: the ratio is not 1
        ADVANTAGES[index],
        out["values"],
        out["values"].detach() + 0.05,
        RETURNS[index],
        entropy=out["entropy"],
        clip_coef=0.2,
        value_clip=0.2,
        value_coef=0.5,
        entropy_coef=0.01,
    )
    terms.loss.backward()
    return terms.loss


def optimizer_of(policy):
    return torch.optim.AdamW(list(policy.model.parameters()) + list(policy.value_head.parameters()), lr=1e-3)


def token_ids_for(policy):
    generator = torch.Generator().manual_seed(5)
    return policy.action_tokenizer.first_id + torch.randint(0, 256, (N, 7), generator=generator)


def fsdp_rank(rank, world, port, path, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from vla_rl.distributed.fsdp import full_tensor, init_distributed, save_full_policy, shard_policy

    init_distributed()
    policy = shard_policy(load(path))
    token_ids = token_ids_for(policy)
    optimizer = optimizer_of(policy)
    step(policy, np.arange(N)[rank::world], token_ids)
    names = [n for n, _ in policy.model.named_parameters()] + [
        f"value_head.{n}" for n, _ in policy.value_head.named_parameters()
    ]
    params = list(policy.model.parameters()) + list(policy.value_head.parameters())
    grads = {n: full_tensor(p.grad).clone() for n, p in zip(names, params, strict=True)}
    norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    weights = {n: full_tensor(p.detach()).clone() for n, p in zip(names, params, strict=True)}
    os.makedirs(os.path.join(out, "checkpoint"), exist_ok=True)
    save_full_policy(policy, os.path.join(out, "checkpoint"))
    if rank == 0:
        torch.save({"grads": grads, "weights": weights, "norm": float(full_tensor(norm))}, os.path.join(out, "fsdp.pt"))
    torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp_on_two_gloo_ranks_matches_single_process_training(tiny_qwen, tmp_path):
    from vla_rl.policy.checkpoint import load_policy, save_policy

    policy = load(tiny_qwen)
    save_policy(policy, str(tmp_path / "start"))  # the value head is part of the starting point
    start = str(tmp_path / "start")
    mp.spawn(fsdp_rank, args=(2, free_port(), start, str(tmp_path)), nprocs=2, join=True)
    fsdp = torch.load(tmp_path / "fsdp.pt")

    single = load(start)
    token_ids = token_ids_for(single)
    optimizer = optimizer_of(single)
    step(single, np.arange(N), token_ids)
    named = list(single.model.named_parameters()) + [
        (f"value_head.{n}", p) for n, p in single.value_head.named_parameters()
    ]
    assert {n for n, _ in named} == set(fsdp["grads"])
    for name, parameter in named:
        torch.testing.assert_close(fsdp["grads"][name], parameter.grad, atol=2e-5, rtol=1e-4, msg=name)
    norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
    assert fsdp["norm"] == pytest.approx(float(norm), rel=1e-4)
    optimizer.step()
    for name, parameter in named:
        torch.testing.assert_close(fsdp["weights"][name], parameter.detach(), atol=2e-5, rtol=1e-4, msg=name)
    assert any(not torch.equal(fsdp["weights"][n], p) for n, p in load(start).model.named_parameters())

    # The checkpoint gathered from the shards loads in one process and equals the trained model.
    reloaded = load_policy(str(tmp_path / "checkpoint"), device="cpu")
    for name, parameter in single.model.named_parameters():
        torch.testing.assert_close(reloaded.model.state_dict()[name], parameter.detach(), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(reloaded.value_head.weight, single.value_head.weight.detach(), atol=2e-5, rtol=1e-4)
