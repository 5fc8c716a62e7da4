"""Run a sweep's runs in parallel as Ray tasks: on this machine (``infoprune sweep --workers N``)
or on an existing Ray cluster (``--ray-address ADDR``).

Ray does the scheduling; this module only says what each run needs and when it may start:

- every run is one task asking for ``threads`` CPUs (and one GPU when the config's device is
  CUDA), which pins torch to that many threads, so N runs on N cores do not oversubscribe them;
- a run that matches another starts once the run it matches is stored, since its level comes
  from the stored record, exactly as in the sequential sweep;
- the runs that prune one trained base model (model, data set, seed) depend on a single
  base-model task that trains it into the cache, so it is trained once however many runs need it
  at the same time (Ray starts a task only when the tasks it depends on have finished);
- each data set is loaded once, by the driver, and shared through Ray's object store.

Workers return records and the driver (:func:`~infoprune.experiments.sweep.run_sweep`) is the
only writer of ``results.sqlite``, one transaction per run. A task whose worker dies (killed, out
of memory) is retried once by Ray (``max_retries=1``); when the retry dies too, the run is stored
as failed and the next sweep retries it. Killing the driver loses only the runs in flight.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from infoprune.data import DatasetSplits
from infoprune.experiments.pipeline import RunConfig, base_model, run_device, training_split
from infoprune.experiments.record import FailedRun, SweepRecord
from infoprune.experiments.results import FAILED, OK, ResultStore
from infoprune.experiments.sweep import Outcome, PlannedRun, SweepJob, execute, failure, run_arguments, run_config

RAY_MISSING = "Running sweep runs in parallel needs Ray, an optional extra: pip install 'infoprune[ray]'"
WORKER_ENV = {"INFOPRUNE_PROGRESS": "0"}  # the driver shows the sweep's progress; workers stay quiet


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"{RAY_MISSING} (or leave out --workers / --ray-address to run one run at a time).") from None
    return ray


@dataclass(frozen=True)
class RayExecutor:
    """A sweep :data:`~infoprune.experiments.sweep.Executor`: up to ``workers`` runs at once, each a
    Ray task of ``threads`` CPUs.

    With ``address`` it joins that cluster (``ray.init(address=...)``; ``"auto"`` is the one ``ray
    start`` began on this machine) and ``workers`` defaults to as many runs as the cluster's CPUs
    (and GPUs) fit; ``threads`` defaults to 1 there. Without it, it starts a local Ray of
    ``workers × threads`` CPUs (``threads`` default: this machine's cores / ``workers``), or uses
    the Ray this process already started.
    """

    workers: int | None = None
    address: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        import_ray()
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}.")
        if self.workers is None and self.address is None:
            raise ValueError("Give the number of runs at once (--workers N) or a Ray cluster (--ray-address ADDR).")

    def cpus_per_run(self) -> int:
        if self.threads is not None:
            return self.threads
        return 1 if self.address is not None else max(1, (os.cpu_count() or 1) // self.workers)

    def __call__(
        self, runs: Sequence[PlannedRun], job: SweepJob, store: ResultStore, show: Callable[[str], None]
    ) -> Iterator[Outcome]:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            show("starting Ray")
            where = {"address": self.address} if self.address else {"num_cpus": self.workers * self.cpus_per_run()}
            ray.init(**where, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV})
        try:
            yield from _Schedule(ray, job, store, self.cpus_per_run(), self.workers).outcomes(runs, show)
        finally:
            if started:
                ray.shutdown()


def uses_gpu(job: SweepJob) -> bool:
    return (job.config.training.device or "").startswith("cuda")


class _Schedule:
    """The driver's side of one parallel sweep: submits runs as they become ready, collects them."""

    def __init__(self, ray: Any, job: SweepJob, store: ResultStore, threads: int, slots: int | None) -> None:
        job = replace(job, cache_dir=job.cache_dir.resolve())  # workers do not share the driver's working folder
        self.ray, self.job, self.store, self.threads = ray, job, store, threads
        resources = {"num_cpus": threads, "num_gpus": 1 if uses_gpu(job) else 0, "max_retries": 1}
        self.run_task = ray.remote(_run_task).options(**resources)
        self.base_task = ray.remote(_train_base).options(**resources)
        self.slots = slots or self._cluster_slots(resources)
        self.job_ref = ray.put(job)
        self.data: dict[tuple[str, int], Any] = {}  # (data set, seed) -> ObjectRef of the loaded splits
        self.bases: dict[tuple[str, str, int], Any] = {}  # (model, data set, seed) -> base-model task

    def _cluster_slots(self, resources: dict[str, Any]) -> int:
        total = self.ray.cluster_resources()
        slots = int(total.get("CPU", 1) // resources["num_cpus"])
        if resources["num_gpus"]:
            slots = min(slots, int(total.get("GPU", 0)))
        return max(1, slots)

    def outcomes(self, runs: Sequence[PlannedRun], show: Callable[[str], None]) -> Iterator[Outcome]:
        """Yield each run as it ends; at most ``slots`` in flight, matched runs after their target."""
        waiting = list(runs)
        unfinished = {r.run_id for r in runs}
        in_flight: dict[Any, PlannedRun] = {}
        while waiting or in_flight:
            ready = [r for r in waiting if r.matches not in unfinished][: self.slots - len(in_flight)]
            for planned in ready:
                waiting.remove(planned)
                try:
                    arguments = run_arguments(planned, self.store)
                except RuntimeError as error:  # the run it matches failed
                    unfinished.discard(planned.run_id)
                    yield planned, FAILED, failure(planned, error)
                    continue
                in_flight[self._submit(planned, arguments)] = planned
            if not in_flight:
                continue
            show(in_flight_line(in_flight.values()))
            [ref], _ = self.ray.wait(list(in_flight), num_returns=1)
            planned = in_flight.pop(ref)
            unfinished.discard(planned.run_id)
            show(in_flight_line(in_flight.values()))
            yield (planned, *self._result(ref, planned))
            self._release(waiting + list(in_flight.values()))

    def _submit(self, planned: PlannedRun, arguments: tuple[dict[str, Any], Any]) -> Any:
        key = (planned.dataset, planned.seed)
        if key not in self.data:
            self.data[key] = self.ray.put(self.job.load(planned.dataset, self.job.config.training.data_dir, planned.seed))
        config = run_config(planned, self.job.config, planned.params, self.job.cache_dir)
        base = None
        if config.pretrained and config.train_epochs > 0:
            base_key = (planned.model, planned.dataset, planned.seed)
            if base_key not in self.bases:
                self.bases[base_key] = self.base_task.remote(config, self.data[key], self.threads)
            base = self.bases[base_key]
        return self.run_task.remote(planned, self.job_ref, arguments, self.data[key], self.threads, base)

    def _result(self, ref: Any, planned: PlannedRun) -> tuple[str, SweepRecord | FailedRun]:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as error:  # its base model's training raised
            return FAILED, failure(planned, error.cause or error)
        except self.ray.exceptions.RayError as error:  # its worker died twice (killed, out of memory)
            return FAILED, failure(planned, error)

    def _release(self, remaining: Iterable[PlannedRun]) -> None:
        """Drop the data sets no remaining run needs (Ray frees them from the object store)."""
        needed = {(r.dataset, r.seed) for r in remaining}
        for key in set(self.data) - needed:
            del self.data[key]


def in_flight_line(runs: Iterable[PlannedRun]) -> str:
    """``2 in flight: mipp 1 (trained, seed 0); l1 0 (trained, seed 0)`` for the progress bar."""
    names = [f"{r.label} {r.level_index} ({r.state}, seed {r.seed})" for r in runs]
    return f"{len(names)} in flight" + (": " + "; ".join(names) if names else "")


def _run_task(
    planned: PlannedRun, job: SweepJob, arguments: tuple[dict[str, Any], Any], data: DatasetSplits,
    threads: int, base_model_trained: None,
) -> tuple[str, SweepRecord | FailedRun]:  # fmt: skip
    """A worker: one run, on ``threads`` torch threads. ``base_model_trained`` is the result of
    the base-model task this run waits for (None: it needs none, or it is in the cache now)."""
    torch.set_num_threads(threads)
    try:
        return OK, execute(planned, job, arguments, data)
    except Exception as error:
        return FAILED, failure(planned, error)


def _train_base(config: RunConfig, data: DatasetSplits, threads: int) -> None:
    """A worker: train the base model the runs of ``config`` prune into the cache (or find it there)."""
    torch.set_num_threads(threads)
    base_model(config, replace(data, train=training_split(config, data)), run_device(config))
