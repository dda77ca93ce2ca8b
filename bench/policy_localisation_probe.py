"""What does a cloned policy know about where things are? Probes of its hidden state at the action.

Usage::

    .venv/bin/python bench/policy_localisation_probe.py --vla_path assets/models/vla-small [other policies ...]
        [--tasks push reach] [--episodes 200] [--mlp layer_3 layer_4 tower] [--out results.json]

``bench/push_localisation.py`` says how precisely a push policy must locate the named block and
pad; ``vla_rl.vision_pretrain`` says how precisely the vision tower locates every object. This
asks what reaches the policy's action: the hidden state at the position that predicts the first
action token (after every layer), read by a ridge regression (every layer) and by a small MLP
(``--mlp``; a linear probe understates what a nonlinear reader could get), both fitted on
privileged positions.

Frames: noisy scripted-expert episodes (the demonstrations' action noise, 0.15) from held-out
seeds (``--seed_base``, default 3,000,000: the project's held-out range, disjoint from training,
evaluation and PRM seeds, ``vla_rl.seed_ranges``), split by episode into probe-training (three
quarters) and held-out episodes; the ridge penalty and the MLP's stopping step are chosen on the
last fifth of the training episodes. Targets: the named block's xy and where it goes (the pad's xy
for push, the block again for reach), and the block-to-pad vector (what push success is about).
Figures are held-out mean xy errors in cm.

Anchors measured in the same run: the mean predictor (every frame gets the training mean: the
error of knowing nothing); the same probes on the policy's own vision tower output (all merged
image tokens concatenated, regressed on every palette object's position and read at the named
object's colour — a weak reader: where an object is depends on which tokens show it); and the
tower read as vision pretraining reads it (``--tower_head``): a per-token linear head trained on
the frozen tower's tokens, reporting vision pretraining's own figures (cell F1, the mean error over
the cells where an object is visible) and a per-frame estimate (each object's cells' positions
weighted by their visibility). A policy whose action position locates things much worse than its
tower has lost localisation on the way; a tower that reads worse after cloning than before it has
lost it in cloning.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from vla_rl import seed_ranges

PENALTIES = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def record_frames(tasks: list[str], episodes: int, seed_base: int, image_size: int, camera: str = "front") -> dict:
    """Frames of noisy-expert episodes with their instruction, state, named and palette positions."""
    import gymnasium as gym

    import envs
    from envs.demos import run_expert_episode
    from envs.experts import make_expert

    out = {k: [] for k in ("images", "states", "instructions", "named", "colours", "episode", "task")}
    for t, task in enumerate(tasks):
        env = gym.make(envs.task_id(task), image_size=image_size, camera=camera)
        try:
            for i in range(episodes):
                seed = seed_base + 10_000 * t + i
                episode = run_expert_episode(env, make_expert(env, action_noise=0.15, seed=seed), seed)
                frames = len(episode.images)
                out["images"].append(episode.images)
                out["states"].append(episode.states)
                out["instructions"] += [episode.instruction] * frames
                out["named"].append(episode.named_positions[:, :, :2])
                out["colours"].append(episode.colour_positions[:, :, :2])
                out["episode"].append(np.full(frames, t * episodes + i))
                out["task"] += [task] * frames
        finally:
            env.close()
    arrays = {k: np.concatenate(v) for k, v in out.items() if k not in ("instructions", "task")}
    return {**arrays, "instructions": out["instructions"], "task": np.array(out["task"])}


def features(vla_path: str, data: dict, batch: int) -> dict[str, np.ndarray]:
    """``layer_k``: the hidden state at the last prompt position after layer k (0: embeddings);
    ``tower``: the vision tower's merged image tokens, concatenated."""
    import torch

    from vla_rl.policy.checkpoint import load_policy

    policy = load_policy(vla_path, device="cpu", max_batch=batch)
    policy.model.eval()
    layers, tower = [], []
    with torch.no_grad():
        for start in range(0, len(data["images"]), batch):
            stop = start + batch
            frames = data["images"][start:stop]
            inputs = policy._inputs(frames, data["instructions"][start:stop], data["states"][start:stop])
            out = policy.model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1)
            layers.append(torch.stack([h[:, -1, :] for h in out.hidden_states], 1).float().numpy())
            grid = inputs["image_grid_thw"]
            tokens = policy.model.model.visual(inputs["pixel_values"], grid_thw=grid).pooler_output
            tower.append(tokens.view(len(frames), -1).float().numpy())
    layers = np.concatenate(layers)
    result = {f"layer_{k}": layers[:, k] for k in range(layers.shape[1])}
    result["tower"] = np.concatenate(tower)
    return result


def record_cells(
    tasks: list[str], episodes: int, seed_base: int, image_size: int, cell: int, camera: str = "front"
) -> tuple[dict, dict]:
    """The same episodes recorded as vision pretraining records them (per-cell visibility and the
    position of every palette object and the gripper), split into probe-training and held-out
    episodes as :func:`main` splits them."""
    from vla_rl.vision_pretrain import record

    train_episodes = int(episodes * 0.75)
    train = record(tasks, train_episodes, image_size, cell, seed_base, 0.15, 1000, camera)
    heldout = record(tasks, episodes - train_episodes, image_size, cell, seed_base + train_episodes, 0.15, 1000, camera)
    return train, heldout


def tower_readout(vla_path: str, train: dict, heldout: dict, steps: int = 3000, seed: int = 0) -> dict:
    """What the policy's vision tower offers, read as vision pretraining reads it: a per-token
    linear head (visibility and position of every palette object and the gripper) trained on the
    frozen tower's tokens of the probe-training episodes. On held-out frames: vision pretraining's
    own figures (cell F1, mean xy error over the cells where an object is visible), and a per-frame
    estimate of each visible palette object (its cells' positions weighted by their visibility)."""
    import torch

    from vla_rl.qwen.loading import load_model
    from vla_rl.qwen.processor import QwenImageProcessor
    from vla_rl.vision_pretrain import POSITION_SCALE, LocalisationHead, evaluate, vision_tokens

    torch.manual_seed(seed)
    model = load_model(vla_path, "--vla_path", device="cpu", dtype="float32")
    visual, image_processor = model.model.visual.eval(), QwenImageProcessor.from_pretrained(vla_path)
    with torch.no_grad():
        tokens = torch.cat(
            [
                vision_tokens(visual, image_processor, train["images"][i : i + 128], "cpu")
                for i in range(0, len(train["images"]), 128)
            ]
        ).view(len(train["images"]), -1, model.config.get_text_config().hidden_size)
    head = LocalisationHead(tokens.shape[-1], "cpu")
    optimiser = torch.optim.Adam(head.linear.parameters(), lr=3e-3)
    visible, positions = torch.from_numpy(train["visible"]).float(), torch.from_numpy(train["positions"])
    generator = np.random.default_rng(seed)
    for _ in range(steps):
        rows = torch.from_numpy(generator.integers(0, len(tokens), 128))
        loss, _, _ = LocalisationHead.loss(head(tokens[rows], len(rows)), visible[rows], positions[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    result = evaluate(visual, head, image_processor, heldout, "cpu")
    errors = []
    with torch.no_grad():
        for i in range(0, len(heldout["images"]), 128):
            frames = heldout["images"][i : i + 128]
            pred = head(vision_tokens(visual, image_processor, frames, "cpu"), len(frames))
            weights = torch.sigmoid(pred[..., 0])  # (B, cells, objects)
            weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-6)
            estimate = (weights[..., None] * pred[..., 1:3]).sum(1)  # (B, objects, 2)
            truth = torch.from_numpy(heldout["positions"][i : i + 128, :, :2])
            seen = torch.from_numpy(heldout["visible"][i : i + 128]).any(1)
            distance = (estimate - truth).norm(dim=-1) * POSITION_SCALE * 100
            errors.append(distance[:, :-1][seen[:, :-1]])
    result["objects_frame_xy_error_cm"] = float(torch.cat(errors).mean())
    return result


def ridge(x_train: np.ndarray, y_train: np.ndarray, penalty: float):
    """Closed-form ridge on standardised features; returns a predictor."""
    mean, scale = x_train.mean(0), x_train.std(0) + 1e-6
    x = (x_train - mean) / scale
    y_mean = y_train.mean(0)
    gram = x.T @ x + penalty * len(x) * np.eye(x.shape[1]) / x.shape[1]
    weights = np.linalg.solve(gram, x.T @ (y_train - y_mean))
    return lambda x_new: ((x_new - mean) / scale) @ weights + y_mean


def mlp(x_train: np.ndarray, y_train: np.ndarray, x_check: np.ndarray, y_check: np.ndarray, seed: int = 0):
    """A two-hidden-layer MLP (256 units, ReLU) on standardised features, trained with Adam on
    minibatches of 256 and kept at the step where the check frames' error was lowest (checked
    every 100 of at most 3,000 steps); NaN targets (absent objects) are left out of the loss."""
    import torch

    torch.manual_seed(seed)
    mean, scale = x_train.mean(0), x_train.std(0) + 1e-6
    y_mean, y_scale = np.nanmean(y_train, 0), np.nanstd(y_train, 0) + 1e-6

    def tensors(x, y):
        y = (y - y_mean) / y_scale
        return (
            torch.from_numpy((x - mean) / scale).float(),
            torch.from_numpy(np.nan_to_num(y)).float(),
            torch.from_numpy(~np.isnan(y)),
        )

    x, y, present = tensors(x_train, y_train)
    xc, yc, pc = tensors(x_check, y_check)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, y.shape[1]),
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = np.random.default_rng(seed)
    best, best_state = np.inf, None
    for step in range(3000):
        rows = torch.from_numpy(generator.integers(0, len(x), 256))
        loss = (((net(x[rows]) - y[rows]) ** 2) * present[rows]).sum() / present[rows].sum().clamp_min(1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 99:
            with torch.no_grad():
                error = float((((net(xc) - yc) ** 2) * pc).sum() / pc.sum().clamp_min(1))
            if error < best:
                best, best_state = error, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)

    def predict(x_new):
        with torch.no_grad():
            out = net(torch.from_numpy((x_new - mean) / scale).float()).numpy()
        return out * y_scale + y_mean

    return predict


def fit(x: np.ndarray, y: np.ndarray, train: np.ndarray, episode: np.ndarray, kind: str = "linear"):
    """A predictor fitted on the training frames: ridge with the penalty that does best on the last
    fifth of the training episodes (``linear``), or the MLP stopped early on them (``mlp``, then
    refitted on nothing more: the check episodes only choose the step)."""
    episodes = np.unique(episode[train])
    inner = np.isin(episode, episodes[: int(len(episodes) * 0.8)]) & train
    check = train & ~inner
    if kind == "mlp":
        return mlp(x[inner], y[inner], x[check], y[check])
    errors = [np.abs(ridge(x[inner], y[inner], p)(x[check]) - y[check]).mean() for p in PENALTIES]
    return ridge(x[train], y[train], PENALTIES[int(np.argmin(errors))])


def xy_error_cm(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.linalg.norm(pred - true, axis=-1).mean() * 100)


def probe(feats: dict[str, np.ndarray], data: dict, train: np.ndarray, test: np.ndarray, mlp_on: list[str]) -> dict:
    """Held-out mean xy error (cm) of the named block, its destination and the block-to-destination
    vector, for every feature set of one policy (and the mean predictor); the feature sets in
    ``mlp_on`` are also read by the MLP probe (rows ``<name> (mlp)``)."""
    named = data["named"].reshape(len(data["named"]), 4)  # block xy, destination xy
    truth = data["named"][test]
    rows = {}
    mean_pred = np.broadcast_to(named[train].mean(0), named[test].shape).reshape(-1, 2, 2)
    rows["mean predictor"] = _errors(mean_pred, truth)
    for name, x in feats.items():
        for kind in ("linear", "mlp") if name in mlp_on else ("linear",):
            label = name if kind == "linear" else f"{name} (mlp)"
            if name == "tower":
                rows[label] = _errors(_tower_named(x, data, train, test, kind), truth)
            else:
                pred = fit(x, named, train, data["episode"], kind)(x[test])
                rows[label] = _errors(pred.reshape(-1, 2, 2), truth)
    return rows


def _tower_named(x: np.ndarray, data: dict, train: np.ndarray, test: np.ndarray, kind: str) -> np.ndarray:
    """The tower probe read at the named objects: every palette colour's position regressed (one
    ridge per colour on the frames whose scene has it; one MLP for all, absent ones masked),
    evaluated at the colour whose object sits where the named one does."""
    colours = data["colours"]
    pred = np.full(colours[test].shape, np.nan)
    if kind == "mlp":
        pred = fit(x, colours.reshape(len(x), -1), train, data["episode"], "mlp")(x[test]).reshape(pred.shape)
    for c in range(colours.shape[1]) if kind == "linear" else ():
        present = ~np.isnan(colours[:, c, 0])
        if (present & train).sum() < 50:
            continue
        predictor = fit(x, colours[:, c], train & present, data["episode"])
        pred[:, c] = predictor(x[test])
    named = data["named"][test]
    out = np.empty(named.shape)
    for j in range(2):  # which colour is the named block, which the destination
        gap = np.linalg.norm(np.nan_to_num(colours[test], nan=1e3) - named[:, j : j + 1], axis=-1)
        out[:, j] = pred[np.arange(len(named)), gap.argmin(1)]
    return out


def _errors(pred: np.ndarray, truth: np.ndarray) -> dict:
    vector = (pred[:, 1] - pred[:, 0], truth[:, 1] - truth[:, 0])
    return {
        "block_cm": xy_error_cm(pred[:, 0], truth[:, 0]),
        "destination_cm": xy_error_cm(pred[:, 1], truth[:, 1]),
        "vector_cm": xy_error_cm(*vector),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--vla_path", nargs="+", required=True, help="policies to probe (checkpoint, training iter_N/ or run dir)"
    )
    parser.add_argument("--tasks", nargs="+", default=["push"], help="tasks whose frames are probed (each separately)")
    parser.add_argument("--episodes", type=int, default=200, help="noisy-expert episodes per task")
    parser.add_argument("--seed_base", type=int, default=seed_ranges.HELDOUT, help="first episode seed (held out)")
    parser.add_argument("--image_size", type=int, default=56, help="frame side (the policies' own)")
    parser.add_argument("--batch", type=int, default=64, help="frames per forward pass")
    parser.add_argument(
        "--mlp",
        nargs="*",
        default=["layer_3", "layer_4", "tower"],
        help="feature sets also read by an MLP probe (layer_K, tower; none: linear only)",
    )
    parser.add_argument(
        "--tower_head",
        type=lambda v: {"true": True, "false": False}[v.lower()],
        default=True,
        help="also read each policy's vision tower with vision pretraining's per-token head (True|False)",
    )
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.episodes < 8:
        parser.error("--episodes must be >= 8 (a quarter is held out, a fifth of the rest picks the penalty)")
    import envs

    for task in args.tasks:
        envs.task_id(task)  # a clear error for an unknown task before anything loads
    from vla_rl.checkpointing import resolve_policy_path
    from vla_rl.qwen.loading import read_checkpoint_config

    args.vla_path = [resolve_policy_path(path) for path in args.vla_path]  # run and iter_N dirs too
    from vla_rl.policy.checkpoint import read_policy_config

    for path in args.vla_path:
        read_checkpoint_config(path, "--vla_path")
    views = {read_policy_config(path)["camera"] for path in args.vla_path}
    if len(views) > 1:
        parser.error(f"--vla_path: the policies see different views {sorted(views)}; probe policies of one view")
    (camera,) = views
    start = time.perf_counter()
    data = record_frames(args.tasks, args.episodes, args.seed_base, args.image_size, camera)
    seconds = time.perf_counter() - start
    print(f"{len(data['images'])} frames of {args.episodes} noisy-expert episodes per task ({seconds:.0f} s)")
    results = {"tasks": args.tasks, "episodes": args.episodes, "seed_base": args.seed_base, "policies": {}}
    cells = None
    if args.tower_head:
        from vla_rl.qwen.processor import QwenImageProcessor

        image_processor = QwenImageProcessor.from_pretrained(args.vla_path[0])
        cells = record_cells(
            args.tasks,
            args.episodes,
            args.seed_base,
            args.image_size,
            image_processor.patch_size * image_processor.merge_size,
            camera,
        )
    for path in args.vla_path:
        start = time.perf_counter()
        feats = features(path, data, args.batch)
        results["policies"][path] = {}
        if cells is not None:
            readout = tower_readout(path, *cells)
            results["policies"][path]["tower_head"] = readout
            print(
                f"\n{path} — the vision tower, per-token head (all tasks' frames): cell F1 {readout['cell_f1']:.3f}, "
                f"objects {readout['objects_xy_error_cm']:.2f} cm per visible cell, "
                f"{readout['objects_frame_xy_error_cm']:.2f} cm per frame, "
                f"gripper {readout['gripper_xy_error_cm']:.2f} cm"
            )
        for task in args.tasks:
            rows_of_task = data["task"] == task
            episode = data["episode"]
            held_out = np.unique(episode[rows_of_task])[int(args.episodes * 0.75) :]
            test = rows_of_task & np.isin(episode, held_out)
            train = rows_of_task & ~test
            rows = probe(feats, data, train, test, args.mlp)
            results["policies"][path][task] = rows
            print(f"\n{path} — {task}: held-out mean xy error (cm), {test.sum()} frames of {len(held_out)} episodes")
            print(f"{'features':16s} {'block':>7s} {'destination':>12s} {'block->dest':>12s}")
            for name, row in rows.items():
                # reach's destination is the block itself: only the block column means anything
                rest = "" if task == "reach" else f" {row['destination_cm']:12.2f} {row['vector_cm']:12.2f}"
                print(f"{name:16s} {row['block_cm']:7.2f}{rest}")
        print(f"({time.perf_counter() - start:.0f} s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
