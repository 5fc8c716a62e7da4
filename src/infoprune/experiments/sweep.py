"""``infoprune sweep``: run a grid of train → prune → re-train runs, storing each as it ends.

The grid (model × dataset × seed × state × method × level, see :mod:`sweep_config`) becomes a
list of :class:`PlannedRun` in a fixed order: data set and seed outermost (one data set in
memory at a time), then model, state, level and method, every matched entry after the entry it
matches. Each run goes through :func:`infoprune.experiments.pipeline.run`, the same code path
as ``infoprune prune``; trained base models are cached under ``OUT/cache`` by (model, data
set, recipe, seed), so every method and level prunes the same network.

Every finished run is written at once to ``OUT/results.sqlite`` (:class:`ResultStore`). A
run's id includes a hash of everything that determines it, so re-running the same config
resumes: finished runs are skipped, failed ones retried, and runs whose settings changed are
new runs. A run that raises is stored as failed with its error and the sweep goes on (runs
that match it fail too); Ctrl-C stops the sweep and loses only the run in progress. Data read
from ``data_dir`` enters the ids through its fingerprint, so changed data never reuses old
results; a second sweep on the same folder waits for the first (``OUT/.sweep.lock``). The
pending runs go through an executor: one at a time in this process (the default), or several
at once as Ray tasks (:mod:`infoprune.experiments.parallel`); this process stores them either way.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import infoprune
from infoprune.data import DatasetSplits, load_dataset
from infoprune.data.base import data_fingerprint
from infoprune.experiments.pipeline import RunConfig, run
from infoprune.experiments.record import FailedRun, GridCell, Level, RunRecord, SweepRecord
from infoprune.experiments.results import FAILED, OK, ResultStore
from infoprune.experiments.sweep_config import MethodEntry, SweepConfig
from infoprune.io import atomic_write_bytes, atomic_write_json, exclusive_folder
from infoprune.progress import logger, progress_bar

PLAN_FILE = "plan.json"
LOCK_FILE = ".sweep.lock"
CONFIG_COPY = "sweep.toml"

Runner = Callable[..., tuple[Any, RunRecord]]
DatasetLoader = Callable[[str, str | None, int], DatasetSplits]


@dataclass(frozen=True)
class PlannedRun(GridCell):
    """One cell of the grid, planned: the method's ``params``, its level, and ``matches``, the id
    of the run it takes its level from."""

    params: dict[str, Any]
    level_index: int
    level_param: str | None
    level_value: Any
    matches: str | None
    match_take: str | None

    def describe(self) -> str:
        if self.matches is not None:
            level = f" ({self.level_param} matched)"
        elif self.level_param is not None:
            value = f"{self.level_value:.6g}" if isinstance(self.level_value, float) else repr(self.level_value)
            level = f" ({self.level_param}={value})"
        else:
            level = ""
        return f"{self.model}/{self.dataset} {self.state} seed {self.seed}: {self.label} level {self.level_index}{level}"


@dataclass(frozen=True)
class SweepOutcome:
    """How many runs the plan has, were already stored, finished now, and failed now."""

    total: int
    skipped: int
    finished: int
    failed: int
    stopped_early: bool


def code_version() -> str:
    """The package version and, in a git checkout, the commit (``+dirty`` with local changes):
    recorded with every run so that a report names the code that produced it."""
    version = f"infoprune {infoprune.__version__}"
    source = Path(infoprune.__file__).parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)

    try:
        commit, changes = git("rev-parse", "--short=12", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return version  # no git: the version alone
    if commit.returncode != 0:
        return version  # not a checkout (an installed package)
    return f"{version}, commit {commit.stdout.strip()}{'+dirty' if changes.stdout.strip() else ''}"


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def plan(config: SweepConfig) -> list[PlannedRun]:
    """Every run of the sweep, in the order it will run (matched runs before their matchers).

    The data directory enters each run's id through its :func:`data_fingerprint` (file names,
    sizes and modification times), not its path: moved data keeps its results, changed data
    gets new runs. (A ``data_dir`` that does not exist adds nothing; :func:`run_sweep` refuses it.)
    """
    training = {k: v for k, v in asdict(config.training).items() if k not in ("device", "data_dir")}
    for key in ("weights", "characterise", "test_samples", "compensate"):  # in a run's identity only when set (keeps older ids)
        if not training[key]:
            del training[key]
    data_dir = config.training.data_dir
    if data_dir is not None and Path(data_dir).expanduser().exists():
        training["data"] = data_fingerprint(data_dir)
    runs: list[PlannedRun] = []
    for dataset in config.datasets:
        for seed in config.seeds:
            for model in config.models:
                for state in config.states:
                    runs += _setting_runs(config, model, dataset, seed, state, training)
    return runs


def _setting_runs(
    config: SweepConfig, model: str, dataset: str, seed: int, state: str, training: dict[str, Any]
) -> list[PlannedRun]:
    """The runs of one (model, dataset, seed, state): levels outer, entries in run order."""
    entries = [e for e in config.methods if state in e.states]
    level_counts = {e.label: _level_count(config, e) for e in entries}
    ids: dict[tuple[str, int], str] = {}
    runs = []
    for index in range(max(level_counts.values(), default=0)):
        for entry in entries:
            if index >= level_counts[entry.label]:
                continue
            value = entry.level_values[index] if entry.level_values else None
            matches = ids[(entry.match.entry, index)] if entry.match else None
            identity = {
                "model": model, "dataset": dataset, "seed": seed, "state": state, "training": training,
                "method": entry.name, "params": entry.params, "level": [entry.level_param, value, matches],
            }  # fmt: skip
            run_id = f"{model}/{dataset}/{state}/seed{seed}/{entry.label}/{index}-{_digest(identity)}"
            ids[(entry.label, index)] = run_id
            runs.append(
                PlannedRun(
                    run_id, model, dataset, seed, state, entry.label, entry.name, entry.params, index,
                    entry.level_param, value, matches, entry.match.take if entry.match else None,
                )
            )  # fmt: skip
    return runs


def _level_count(config: SweepConfig, entry: MethodEntry) -> int:
    if entry.match is not None:
        return _level_count(config, config.entry(entry.match.entry))
    return max(1, len(entry.level_values))


def encode_mask(mask) -> str:
    """A bool mask as a string of 0/1 (compact in JSON, exact)."""
    return "".join("1" if keep else "0" for keep in mask.flatten().tolist())


def decode_mask(text: str) -> list[bool]:
    return [c == "1" for c in text]


def matched_level(matched: SweepRecord, param: str) -> float:
    """What a matching run takes as ``param`` from the run it matches: the fraction of FLOPs or
    parameters kept, or (``ratio``, ``masks``) the fraction of units removed."""
    return matched.kept_fraction(param) if param in ("flops", "params") else matched.units_removed_fraction


def matched_record(planned: PlannedRun, store: ResultStore) -> SweepRecord:
    """The stored record of the run ``planned`` matches; an error if that run did not succeed."""
    stored = store.get(planned.matches)
    if stored is None or stored[0] != OK:
        raise RuntimeError(f"the run it matches, {planned.matches}, did not finish successfully")
    return stored[1]


def run_config(planned: PlannedRun, config: SweepConfig, params: dict[str, Any], cache_dir: Path) -> RunConfig:
    return RunConfig(
        model=planned.model,
        dataset=planned.dataset,
        method=planned.method,
        method_params=params,
        seed=planned.seed,
        pretrained=planned.state == "trained",
        cache_dir=str(cache_dir),
        **asdict(config.training),
    )


def run_arguments(planned: PlannedRun, store: ResultStore) -> tuple[dict[str, Any], Any]:
    """The method parameters of ``planned`` and its level value; a matched run's come from the
    stored record of the run it matches (so that run must be stored first)."""
    params = dict(planned.params)
    level_value = planned.level_value
    if planned.matches is not None:
        # the matched run's global fraction of units removed (ratio=), of FLOPs or parameters kept
        # (flops=, params=), or its masks (masks=)
        matched = matched_record(planned, store)
        level_value = matched_level(matched, planned.level_param)
        masks = {name: decode_mask(text) for name, text in matched.masks.items()}
        params[planned.level_param] = masks if planned.match_take == "masks" else level_value
    elif planned.level_param is not None:
        params[planned.level_param] = level_value
    return params, level_value


@dataclass(frozen=True)
class SweepJob:
    """What every run of one sweep shares: the config, the base-model cache and the code to run."""

    config: SweepConfig
    cache_dir: Path
    runner: Runner = run
    load: DatasetLoader = load_dataset


def execute(
    planned: PlannedRun,
    job: SweepJob,
    arguments: tuple[dict[str, Any], Any],
    data: DatasetSplits,
    on_stage: Callable[[str], None] | None = None,
) -> SweepRecord:
    """Run ``planned`` with its :func:`run_arguments` and return its record (with the sweep's
    identifying fields)."""
    params, level_value = arguments
    start = time.perf_counter()
    result, record = job.runner(run_config(planned, job.config, params, job.cache_dir), data, on_stage=on_stage)
    return SweepRecord.of(
        record,
        planned,
        level=Level(index=planned.level_index, param=planned.level_param, value=level_value, matches=planned.matches),
        masks={name: encode_mask(mask) for name, mask in result.masks.items()},
        input_mask=None if result.input_mask is None else encode_mask(result.input_mask),
        run_seconds=time.perf_counter() - start,
    )


@contextmanager
def sweep_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``OUT/.sweep.lock`` while a sweep runs on ``out_dir`` (:func:`infoprune.io.exclusive_folder`).

    A second sweep on the same folder logs who holds it and waits; once it has the lock it
    reads the stored runs afresh, so it skips every run the first one finished.
    """
    def wait(holder: str) -> None:
        logger.warning(
            "another sweep (%s) is running on %s: waiting for it to end; its finished runs will be skipped",
            holder, out_dir,
        )  # fmt: skip

    with exclusive_folder(out_dir, LOCK_FILE, "infoprune sweep", on_busy=wait):
        yield


def failure(planned: PlannedRun, error: BaseException) -> FailedRun:
    """The record stored for a run that raised ``error``."""
    return FailedRun(
        run_id=planned.run_id, label=planned.label, error=f"{type(error).__name__}: {error}",
        traceback="".join(traceback.format_exception(error, limit=8)), planned=asdict(planned),
    )  # fmt: skip


Outcome = tuple[PlannedRun, str, SweepRecord | FailedRun]
"""A finished run: the run, its status (``OK`` or ``FAILED``) and its record."""

Executor = Callable[[Sequence[PlannedRun], SweepJob, ResultStore, Callable[[str], None]], Iterator[Outcome]]
"""Runs the given runs (in plan order, matched runs after their targets) and yields each as it
ends; the sweep stores it before asking for the next. The last argument shows a status line.
:func:`run_sequentially` here, or :class:`infoprune.experiments.parallel.RayExecutor`."""


def run_sequentially(
    runs: Sequence[PlannedRun], job: SweepJob, store: ResultStore, show: Callable[[str], None]
) -> Iterator[Outcome]:
    """The default :data:`Executor`: one run at a time in this process, one data set in memory."""
    loaded: tuple[tuple[str, int], DatasetSplits] | None = None
    for planned in runs:
        if loaded is None or loaded[0] != (planned.dataset, planned.seed):
            loaded = None  # free the previous data set first
            show(f"loading {planned.dataset}")
            loaded = ((planned.dataset, planned.seed), job.load(planned.dataset, job.config.training.data_dir, planned.seed))
        label = planned.describe()
        try:
            record = execute(planned, job, run_arguments(planned, store), loaded[1], lambda stage: show(f"{label} · {stage}"))
        except Exception as error:
            yield planned, FAILED, failure(planned, error)
        else:
            yield planned, OK, record


def run_sweep(
    config: SweepConfig,
    out_dir: str | Path,
    *,
    config_text: str | None = None,
    max_runs: int | None = None,
    runner: Runner = run,
    load: DatasetLoader = load_dataset,
    executor: Executor = run_sequentially,
) -> SweepOutcome:
    """Run every planned run not yet stored in ``out_dir``; at most ``max_runs`` of them.

    ``config_text`` (the TOML source) is kept as ``OUT/sweep.toml``; ``OUT/plan.json`` lists
    the current plan's run ids, which the report uses. ``runner`` and ``load`` default to the
    pipeline and :func:`load_dataset` (tests substitute them). ``executor`` runs the pending
    runs: one at a time here (the default) or in parallel (:mod:`infoprune.experiments.parallel`);
    either way this process alone writes the results, one transaction per run. A second sweep
    started on the same ``out_dir`` waits (and says so) until this one ends, then skips what it stored.
    """
    out_dir = Path(out_dir)
    data_fingerprint(config.training.data_dir)  # a missing data_dir fails here, not in every run
    store = ResultStore(out_dir)
    runs = plan(config)
    with sweep_lock(out_dir):
        return _run_plan(runs, config, out_dir, store, config_text, max_runs, runner, load, executor)


def _run_plan(
    runs: list[PlannedRun],
    config: SweepConfig,
    out_dir: Path,
    store: ResultStore,
    config_text: str | None,
    max_runs: int | None,
    runner: Runner,
    load: DatasetLoader,
    executor: Executor,
) -> SweepOutcome:
    """The body of :func:`run_sweep`, run while holding the output folder's lock."""
    atomic_write_json(out_dir / PLAN_FILE, {"description": config.description, "runs": [r.run_id for r in runs]})
    if config_text is not None:
        atomic_write_bytes(out_dir / CONFIG_COPY, lambda f: f.write(config_text.encode()))
    statuses = store.statuses()
    pending = [r for r in runs if statuses.get(r.run_id) != OK]
    skipped = len(runs) - len(pending)
    if skipped:
        logger.info("resuming: %d of %d runs already stored in %s", skipped, len(runs), store.path)
    finished = failed = 0
    code = code_version()
    bar = progress_bar(total=len(runs), initial=skipped, desc="sweep", leave=True, unit="run")
    job = SweepJob(config, out_dir / "cache", runner, load)
    try:
        for planned, status, record in executor(pending[:max_runs], job, store, bar.set_postfix_str):
            label = planned.describe()
            if status == FAILED:
                failed += 1
                logger.warning("run failed: %s: %s", label, record.error)
            else:
                finished += 1
                record = replace(record, code=code)
                logger.info(
                    "%s: %.1f%% of units removed, test accuracy %.4f after re-training%s",
                    label, 100 * record.units_removed_fraction,
                    record.accuracy_retrained.test, " (collapsed)" if record.collapsed else "",
                )  # fmt: skip
            store.put(planned.run_id, status, record)
            bar.update(1)
    finally:
        bar.close()
    stopped_early = skipped + finished + failed < len(runs)
    return SweepOutcome(len(runs), skipped, finished, failed, stopped_early)
