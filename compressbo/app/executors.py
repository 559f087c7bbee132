"""Where evaluations run: in a pool of worker processes, or on Ray actors.

An :class:`~compressbo.bo.asynchronous.Executor` holds ``size`` workers; each worker builds its objective once (from a
picklable :data:`WorkerFactory`) and then evaluates proposals ``(x, index)`` one at a time.
The driver (:func:`compressbo.bo.asynchronous.run_async`) submits a proposal to an idle worker
and waits for the next one to finish; a worker that dies mid-evaluation reports its
proposal as ``lost`` and is started again, so the run goes on.

* :class:`~compressbo.bo.asynchronous.InProcessExecutor` (in the engine): this process.
* :class:`ProcessPoolExecutor`: ``N`` processes started with ``spawn`` on this machine.
* :class:`RayExecutor`: ``N`` Ray actors (``num_gpus=1`` each where the cluster has GPUs);
  the factory is put once into Ray's object store and handed to every actor.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from compressbo._ray import connect, import_ray
from compressbo.bo.asynchronous import Done, evaluate_safely
from compressbo.bo.loop import Evaluation, Proposal
from compressbo.exceptions import SettingError

__all__ = [
    "ProcessPoolExecutor",
    "RayExecutor",
    "WorkerFactory",
    "import_ray",
]

WorkerFactory = Callable[[int, str], Callable[[torch.Tensor, int], Evaluation]]
"""``(worker id, device) -> objective``: picklable; called once in each worker."""


def worker_devices(device: str, workers: int) -> list[str]:
    """Device of each worker, round-robin: over a list ``cuda:0,cuda:2``, over the visible GPUs
    for ``cuda`` / ``auto`` on a GPU machine, else ``device`` (``cpu``) for every worker.

    Several workers may share one GPU (``--workers 4`` on two GPUs: two each), for networks
    too small to fill it.

    Args:
        device: The run's device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``, or a list).
        workers: Number of workers.
    """
    from compressbo.compression.evaluator import resolve_devices

    if "," in device:
        names = [str(d) for d in resolve_devices(device)]
    elif device in ("auto", "cuda") and torch.cuda.is_available():
        names = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        names = ["cpu" if device == "auto" else device]
    return [names[i % len(names)] for i in range(workers)]


def threads_per_worker(workers: int) -> int:
    """CPU threads for each of ``workers`` workers: this machine's cores split between them."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


# ---------------------------------------------------------------------- process pool


def _pool_worker(factory: WorkerFactory, worker: int, device: str, threads: int, conn: Connection, parent: int) -> None:
    """A pool process: build the objective once, then evaluate until told to stop."""
    from compressbo._lifecycle import exit_with_parent

    exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    torch.set_num_threads(threads)
    objective = factory(worker, device)
    conn.send(("ready", os.getpid()))
    while True:
        message = conn.recv()
        if message is None:
            return
        index, x = message
        conn.send(("done", index, *evaluate_safely(objective, x, index)))


@dataclass
class _PoolSlot:
    process: Any
    conn: Connection
    proposal: Proposal | None = None


class ProcessPoolExecutor:
    """``size`` worker processes on this machine (``spawn``), each building its objective once.

    Args:
        factory: ``(worker id, device) -> objective``, picklable.
        size: Number of processes.
        devices: Device of each worker (default :func:`worker_devices` of ``"cpu"``).
        threads: Torch threads per worker (default :func:`threads_per_worker`).
    """

    def __init__(self, factory: WorkerFactory, size: int, *, devices: list[str] | None = None, threads: int | None = None) -> None:
        if size < 1:
            raise SettingError(f"workers must be at least 1, got {size}", setting="workers")
        self.size = size
        self.factory = factory
        self.devices = devices or ["cpu"] * size
        self.threads = threads or threads_per_worker(size)
        self.host = socket.gethostname()
        self._context = multiprocessing.get_context("spawn")
        self.slots = [self._start(i) for i in range(size)]
        for i in range(size):
            self._await_ready(i)

    @property
    def pids(self) -> list[int]:
        """Process id of each worker (for tests and logs)."""
        return [slot.process.pid for slot in self.slots]

    def _start(self, worker: int) -> _PoolSlot:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_pool_worker,
            args=(self.factory, worker, self.devices[worker], self.threads, child, os.getpid()),
            name=f"compressbo-worker-{worker}",
            daemon=True,
        )
        process.start()
        child.close()
        return _PoolSlot(process, parent)

    def _await_ready(self, worker: int) -> None:
        slot = self.slots[worker]
        try:
            slot.conn.recv()
        except EOFError:
            slot.process.join()
            raise RuntimeError(f"worker {worker} could not start (exit code {slot.process.exitcode})") from None

    def idle(self) -> int:
        return sum(slot.proposal is None for slot in self.slots)

    def submit(self, proposal: Proposal) -> None:
        slot = next(slot for slot in self.slots if slot.proposal is None)
        slot.proposal = proposal
        try:
            slot.conn.send((proposal.index, proposal.x.tolist()))
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the process died while idle: next_done reports the proposal lost

    def next_done(self) -> Done:
        busy = {i: slot for i, slot in enumerate(self.slots) if slot.proposal is not None}
        waitables: dict[Any, int] = {}
        for i, slot in busy.items():
            waitables[slot.conn] = i
            waitables[slot.process.sentinel] = i
        ready = wait(list(waitables))
        worker = waitables[next((r for r in ready if isinstance(r, Connection)), ready[0])]
        slot = self.slots[worker]
        proposal = slot.proposal
        assert proposal is not None
        slot.proposal = None
        try:
            if not slot.conn.poll():
                raise EOFError
            _, index, evaluation, error, started, finished = slot.conn.recv()
            return Done(proposal, evaluation, worker, self.devices[worker], self.host, started, finished, error)
        except (EOFError, ConnectionResetError, OSError):
            slot.process.join(timeout=5)
            code = slot.process.exitcode
            self._replace(worker)
            now = time.time()
            return Done(proposal, None, worker, self.devices[worker], self.host, now, now,
                        f"worker {worker} died (exit code {code})", lost=True)  # fmt: skip

    def _replace(self, worker: int) -> None:
        old = self.slots[worker]
        old.conn.close()
        if old.process.is_alive():
            old.process.kill()
        old.process.join()
        self.slots[worker] = self._start(worker)
        self._await_ready(worker)

    def close(self) -> None:
        for slot in self.slots:
            try:
                slot.conn.send(None)
            except OSError:
                pass
        for slot in self.slots:
            slot.process.join(timeout=2)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
            slot.conn.close()


# ---------------------------------------------------------------------- Ray


class _RayWorker:
    """A Ray actor's body: build the objective once from the shared factory, then evaluate."""

    def __init__(self, factory: WorkerFactory, worker: int, device: str, threads: int) -> None:
        torch.set_num_threads(threads)
        if device.startswith("cuda") and torch.cuda.is_available():
            device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU
        self.device = device
        self.objective = factory(worker, device)

    def where(self) -> tuple[str, str, int]:
        return self.device, socket.gethostname(), os.getpid()

    def evaluate(self, index: int, x: list[float]) -> tuple[Evaluation | None, str | None, float, float]:
        return evaluate_safely(self.objective, x, index)


class RayExecutor:
    """``size`` Ray actors; one GPU each where the cluster has GPUs.

    Args:
        factory: ``(worker id, device) -> objective``; put into the object store once.
        size: Number of actors (default: the cluster's GPUs, else 1).
        address: ``ray.init``'s address (``auto``: a running cluster; ``None``: start a local Ray
            unless one is already initialized in this process).
        threads: Torch threads per actor on CPU.
    """

    def __init__(self, factory: WorkerFactory, size: int | None = None, *, address: str | None = None, threads: int | None = None) -> None:
        ray = self.ray = connect(address)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.size = size if size is not None else max(gpus, 1)
        if self.size < 1:
            raise SettingError(f"workers must be at least 1, got {self.size}", setting="workers")
        self.gpus = 1 if gpus >= self.size else 0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.threads = threads or max(1, cpus // self.size)
        self.factory_ref = ray.put(factory)
        self._actor_class = ray.remote(num_cpus=1, num_gpus=self.gpus, max_restarts=0)(_RayWorker)
        self.actors = [self._start(i) for i in range(self.size)]
        self.where = ray.get([actor.where.remote() for actor in self.actors])
        self._running: dict[Any, tuple[int, Proposal]] = {}

    def _start(self, worker: int) -> Any:
        device = "cuda" if self.gpus else "cpu"
        return self._actor_class.remote(self.factory_ref, worker, device, self.threads)

    def idle(self) -> int:
        return self.size - len(self._running)

    def submit(self, proposal: Proposal) -> None:
        busy = {worker for worker, _ in self._running.values()}
        worker = next(i for i in range(self.size) if i not in busy)
        ref = self.actors[worker].evaluate.remote(proposal.index, proposal.x.tolist())
        self._running[ref] = (worker, proposal)

    def next_done(self) -> Done:
        ray = self.ray
        (ref,), _ = ray.wait(list(self._running), num_returns=1)
        worker, proposal = self._running.pop(ref)
        device, host, _ = self.where[worker]
        try:
            evaluation, error, started, finished = ray.get(ref)
            return Done(proposal, evaluation, worker, device, host, started, finished, error)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:
            self.actors[worker] = self._start(worker)
            self.where[worker] = ray.get(self.actors[worker].where.remote())
            now = time.time()
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            return Done(proposal, None, worker, device, host, now, now, f"worker {worker} died ({reason})", lost=True)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self._running.clear()
