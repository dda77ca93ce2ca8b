"""A PRM server actor with dynamic batching, and the client PRM the env workers hold.

Every env worker sends its frames to one :class:`PRMServer`; the server queues the requests and
runs the PRM on up to ``max_batch_size`` frames at a time, waiting at most ``max_wait_ms`` for
a batch to fill, so PRM calls stay large however many workers there are (the PRM itself splits
a batch into its own forward-pass chunks). Requests are kept whole: a batch takes queued
requests in arrival order until the next one would pass ``max_batch_size`` (a single larger
request forms a batch alone).

The server is a restartable actor and :class:`RemotePRM` calls it with Ray's task retries: when
the server process dies, Ray restarts it (rebuilding the PRM from its spec) and the request is
sent again.

Ray's own ``serve.batch`` batches calls, not frames, and needs Ray Serve; the queue below is the
few lines that count frames instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from reward.base import ProcessRewardModel
from vla_rl.distributed.ray_setup import require_ray

logger = logging.getLogger("vla_rl.distributed")


@dataclass(frozen=True)
class PRMSpec:
    """Everything needed to build a PRM inside another process (the model is never pickled)."""

    name: str  # a checkpoint directory or a built-in PRM name
    adapter_path: str | None = None
    device: str = "auto"
    batch_size: int = 32
    seed: int = 0

    def build(self) -> ProcessRewardModel:
        from reward.base import BUILTIN_PRMS, builtin_prm

        if self.name in BUILTIN_PRMS:
            return builtin_prm(self.name, seed=self.seed)
        from reward.qwen_prm import QwenProcessRM

        return QwenProcessRM(self.name, adapter_path=self.adapter_path, device=self.device, batch_size=self.batch_size)

    @property
    def is_model(self) -> bool:
        from reward.base import BUILTIN_PRMS

        return self.name not in BUILTIN_PRMS


class PRMServer:
    """The PRM behind a dynamic-batching queue (an async Ray actor; see the module doc)."""

    def __init__(self, spec: PRMSpec, max_batch_size: int = 64, max_wait_ms: float = 5.0):
        if max_batch_size < 1:
            raise ValueError(f"--prm_server_batch_size must be >= 1, got {max_batch_size}.")
        if max_wait_ms < 0:
            raise ValueError(f"--prm_server_wait_ms must be >= 0, got {max_wait_ms}.")
        self.prm = spec.build()
        self.name = f"{type(self.prm).__name__} {spec.name}"
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue: list[tuple] = []
        self.arrived: asyncio.Event | None = None
        self.batcher: asyncio.Task | None = None
        self.stats_ = {"requests": 0, "frames": 0, "calls": 0, "largest_call": 0, "busy_s": 0.0, "pid": os.getpid()}

    async def score(self, frames, instructions, infos=None) -> np.ndarray:
        if self.batcher is None:
            self.arrived = asyncio.Event()
            self.batcher = asyncio.get_running_loop().create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        self.queue.append((np.asarray(frames), list(instructions), None if infos is None else list(infos), future))
        self.stats_["requests"] += 1
        self.arrived.set()
        return await future

    def _queued_frames(self) -> int:
        return sum(len(request[0]) for request in self.queue)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            deadline = loop.time() + self.max_wait
            while self._queued_frames() < self.max_batch_size and loop.time() < deadline:
                try:
                    await asyncio.wait_for(self.arrived.wait(), timeout=max(deadline - loop.time(), 0.0))
                    self.arrived.clear()
                except TimeoutError:
                    break
            while self.queue:
                batch, size = [], 0
                while self.queue and (not batch or size + len(self.queue[0][0]) <= self.max_batch_size):
                    batch.append(self.queue.pop(0))
                    size += len(batch[-1][0])
                await self._run(loop, batch)

    async def _run(self, loop, batch: list[tuple]) -> None:
        frames = np.concatenate([request[0] for request in batch])
        texts = [text for request in batch for text in request[1]]
        has_infos = any(request[2] is not None for request in batch)
        infos = [info for request in batch for info in (request[2] or [{}] * len(request[0]))] if has_infos else None
        start = time.perf_counter()
        try:
            scores = await loop.run_in_executor(None, self.prm.score, frames, texts, infos)
        except Exception as error:  # the callers get the PRM's own error
            for request in batch:
                if not request[3].done():
                    request[3].set_exception(error)
            return
        self.stats_["busy_s"] += time.perf_counter() - start
        self.stats_["calls"] += 1
        self.stats_["frames"] += len(frames)
        self.stats_["largest_call"] = max(self.stats_["largest_call"], len(frames))
        offset = 0
        for request in batch:
            request[3].set_result(scores[offset : offset + len(request[0])])
            offset += len(request[0])

    async def stats(self) -> dict:
        """Calls and frames served so far, the PRM's name, decision threshold and score window."""
        return {
            **self.stats_,
            "name": self.name,
            "threshold": self.prm.threshold,
            "score_window": self.prm.score_window,
        }


class RemotePRM(ProcessRewardModel):
    """A PRM whose scoring happens in a :class:`PRMServer` (picklable: pass it to env workers);
    it carries the served PRM's decision threshold and score window, for the videos."""

    name = "remote"

    def __init__(
        self, server, timeout_s: float = 600.0, threshold: float | None = None, score_window: int | None = None
    ):
        self.server = server
        self.timeout_s = timeout_s
        if threshold is None or score_window is None:  # ask the server
            stats = require_ray().get(server.stats.remote(), timeout=timeout_s)
            threshold, score_window = stats["threshold"], stats["score_window"]
        self.threshold = float(threshold)
        self.score_window = int(score_window)

    def _score(self, frames, instructions, infos):
        ray = require_ray()
        return ray.get(self.server.score.remote(frames, instructions, infos), timeout=self.timeout_s)


def start_prm_server(
    spec: PRMSpec,
    max_batch_size: int = 64,
    max_wait_ms: float = 5.0,
    options: dict | None = None,
    retries: int = 3,
    start_timeout_s: float = 300.0,
):
    """A :class:`PRMServer` actor, restarted by Ray if it dies, and a :class:`RemotePRM` on it.

    Returns ``(actor, client)``; the PRM is loaded before this returns (errors surface here)."""
    ray = require_ray()
    actor = (
        ray.remote(PRMServer)
        .options(max_restarts=-1, max_task_retries=retries, max_concurrency=1000, **(options or {}))
        .remote(spec, max_batch_size, max_wait_ms)
    )
    ready, _ = ray.wait([actor.stats.remote()], timeout=start_timeout_s)  # the PRM is loaded when it answers
    if not ready:
        ray.kill(actor)
        raise RuntimeError(
            f"the PRM server did not start within {start_timeout_s:g} s (cluster resources free: "
            f"{ray.available_resources()}); free resources or use --use_ray False."
        )
    stats = ray.get(ready[0])  # raises the PRM's own error (a bad checkpoint path, ...)
    return actor, RemotePRM(actor, threshold=stats["threshold"], score_window=stats["score_window"])
