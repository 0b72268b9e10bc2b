"""Where candidate policies are evaluated: in this process, or on N Ray workers at once.

A pool takes a list of kept-channel vectors and returns one
:class:`~adc.objective.evaluator.Evaluation` per vector, in the order given
-- whatever order the workers finish in -- so the same seed and the same
number of workers give the same search.

:class:`RayPool` starts N Ray actors, each holding its own copy of the
:class:`~adc.objective.evaluator.Evaluator` (model, images, the pruner's
trace and statistics), put once in Ray's object store and fetched by each actor
on its first evaluation (again after a restart); a model or data class
defined in a user's ``file.py`` is shipped by value, as no worker can import
it. The
``i``-th policy of a round always goes to worker ``i mod N``, and the history
records it. An actor that dies (killed, out of memory) is restarted by Ray
and its evaluation run again (``max_restarts`` / ``max_task_retries``):
evaluations have no side effects, so nothing is lost. Ray is an optional
extra (``pip install 'adc[ray]'``); a local instance is started unless
``address`` names a cluster.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from adc.objective.evaluator import Evaluation, Evaluator, Score
from adc.utils.errors import AdcError
from adc.utils.formatting import one_line
from adc.utils.plugins import file_modules


class InProcessPool:
    """Evaluates policies one after another in this process (``workers=1``)."""

    workers = 1

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluators = {"search": evaluator}

    def add_score(self, name: str, score: Score, source: str) -> None:
        """Register another scoring of the same candidates (the final selection's held-out images)."""
        self.evaluators[name] = self.evaluators["search"].with_score(score, source)

    def evaluate(self, kepts: list[np.ndarray], score: str = "search") -> list[Evaluation]:
        evaluator = self.evaluators[score]
        return [evaluator(k) for k in kepts]

    def close(self) -> None:
        pass


class _Worker:
    """One Ray actor: an evaluator per scoring, on the actor's device and threads.

    The evaluators come as object references inside a list with each call, and
    the actor fetches each once, on first use -- also after Ray restarts it.
    (A reference among the constructor's arguments would make Ray log an error
    line for every actor of every search, restartable actors being its concern.)
    """

    def __init__(self, device: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.device = device
        self.evaluators: dict[str, Evaluator] = {}

    def _fetch(self, shipped: list[Any]) -> Any:
        import ray

        return ray.get(shipped[0])

    def _on_device(self, evaluator: Evaluator) -> Evaluator:
        return evaluator.to(self.device) if self.device != "cpu" else evaluator

    def evaluate(self, kept: np.ndarray, score: str, search: list[Any], shipped: list[Any] | None = None,
                 source: str = "") -> Evaluation:
        """Score one policy with the ``score`` scoring (the search's, or another shipped one such as held-out images)."""
        if "search" not in self.evaluators:
            self.evaluators["search"] = self._on_device(self._fetch(search))
        if score not in self.evaluators:
            self.evaluators[score] = self._on_device(self.evaluators["search"].with_score(self._fetch(shipped), source))  # type: ignore[arg-type]
        return self.evaluators[score](kept)

    def pid(self) -> int:
        return os.getpid()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse in one line a ``HOST:PORT`` nobody answers on (Ray itself would retry for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise AdcError(f"--ray-address: cannot start or join the Ray cluster at {address!r}: nothing answers at "
                       f"{host}:{port} ({exc.strerror or type(exc).__name__}); start it with `ray start --head`, "
                       "or leave --ray-address out for a local instance") from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AdcError("--workers above 1 needs Ray, an optional extra: pip install 'adc[ray]'") from None
    return ray


class RayPool:
    """Evaluates a round's policies on ``workers`` Ray actors at once.

    Args:
        evaluator: The search's evaluator (shipped to every worker once).
        workers: Number of actors.
        address: A Ray cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); None or ``local`` starts one here.
        device: ``cpu`` or ``cuda``; on CUDA each worker asks for ``gpus_per_worker`` of a GPU (default ``1 / workers``).
        threads: Torch threads per worker (each worker asks Ray for that many CPUs).
        gpus_per_worker: GPU share of a worker.

    Raises:
        AdcError: when Ray is missing or the cluster cannot be reached (one line).
    """

    def __init__(self, evaluator: Evaluator, workers: int, *, address: str | None = None, device: str = "cpu",
                 threads: int = 1, gpus_per_worker: float | None = None) -> None:
        ray = _import_ray()
        self._ray = ray
        self.workers = workers
        self._started = False
        if not ray.is_initialized():
            try:
                if address in (None, "local"):
                    cpus = max(os.cpu_count() or 1, workers * threads)
                    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
                else:
                    _check_reachable(address)
                    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            except AdcError:
                raise
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
                where = f"the Ray cluster at {address!r}" if address not in (None, "local") else "a local Ray instance"
                raise AdcError(f"--ray-address: cannot start or join {where}: {one_line(exc)}") from exc
            self._started = True
        gpus = 0.0
        if device.startswith("cuda"):
            gpus = gpus_per_worker if gpus_per_worker is not None else 1.0 / workers
        actor = ray.remote(num_cpus=threads, num_gpus=gpus, max_restarts=-1, max_task_retries=-1)(_Worker)
        worker_device = "cuda" if device.startswith("cuda") else "cpu"
        for module in file_modules():  # a model or data class from `file.py:fn` is not importable on a worker
            ray.cloudpickle.register_pickle_by_value(module)
        ref = ray.put(evaluator.to("cpu") if device != "cpu" else evaluator)
        self._actors = [actor.remote(worker_device, threads) for _ in range(workers)]
        self._ref = ref
        self._scores: dict[str, tuple[Any, str]] = {}

    def pids(self) -> list[int]:
        """The process id of every worker (tests kill one)."""
        return self._ray.get([a.pid.remote() for a in self._actors])

    def add_score(self, name: str, score: Score, source: str) -> None:
        """Register another scoring; it is shipped once, and each worker fetches it on first use."""
        self._scores[name] = (self._ray.put(score), source)

    def evaluate(self, kepts: list[np.ndarray], score: str = "search") -> list[Evaluation]:
        shipped, source = ([self._scores[score][0]], self._scores[score][1]) if score in self._scores else (None, "")
        refs = [self._actors[i % self.workers].evaluate.remote(np.asarray(k), score, [self._ref], shipped, source)
                for i, k in enumerate(kepts)]
        try:
            results = self._ray.get(refs)
        except self._ray.exceptions.RayTaskError as exc:  # the evaluation itself raised (a user plug-in, say)
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            if isinstance(cause, AdcError):
                raise AdcError(str(cause)) from None
            raise AdcError(f"a worker's evaluation failed: {one_line(cause)}") from None
        return [replace(r, worker=i % self.workers) for i, r in enumerate(results)]

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._started:
            self._ray.shutdown()


def make_pool(evaluator: Evaluator, *, workers: int, address: str | None, device: str, threads: int,
              gpus_per_worker: float | None) -> InProcessPool | RayPool:
    """``workers`` 1 (and no cluster address): in this process; otherwise Ray."""
    if workers == 1 and address in (None, "local"):
        return InProcessPool(evaluator)
    return RayPool(evaluator, workers, address=address, device=device, threads=threads, gpus_per_worker=gpus_per_worker)
