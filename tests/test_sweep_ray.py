"""Parallel sweeps on a local Ray cluster of 2 CPUs: a killed driver resumes, a killed worker's run is
retried, every run is stored once and equals the sequential sweep's."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from infoprune.cli import main
from infoprune.experiments.pipeline import run
from infoprune.experiments.record import SweepRecord
from infoprune.experiments.results import FAILED, OK, ResultStore
from infoprune.experiments.sweep import plan, run_sweep
from infoprune.experiments.sweep_config import load_config

from records import stand_in_record

try:
    import ray  # noqa: F401
except ImportError:
    HAVE_RAY = False
else:
    HAVE_RAY = True
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install 'infoprune[ray]'; scripts/setup.sh does)")
TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"

# 4 runs: MIPP at 2 confidences on one trained LeNet-5, L1 at the ratios MIPP reached
TINY = """
description = "tiny parallel sweep"
[grid]
models = ["lenet5"]
datasets = ["mnist"]
seeds = [0]
states = ["trained"]
[training]
train_epochs = 1
retrain_epochs = 1
calibration_samples = 300
train_samples = 2000
device = "cpu"
[[methods]]
name = "mipp"
params = { hidden_size = 8, fit_iterations = 10, refit_iterations = 2, ordering_iterations = 2, repeats = 2 }
levels = { param = "confidence", schedule = "geometric", count = 2 }
[[methods]]
name = "l1"
match = "mipp"
"""
DETERMINISTIC = ("masks", "accuracy_original", "accuracy_pruned", "accuracy_retrained", "level", "collapsed")


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs; its workers can import this module (the test runners)."""
    import ray

    env = {"INFOPRUNE_PROGRESS": "0", "PYTHONPATH": os.pathsep.join([str(TESTS), str(SRC)])}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sequential(config_path, tmp_path_factory) -> dict[str, dict]:
    """The same sweep run one run at a time in this process: ``{run_id: record}``."""
    out = tmp_path_factory.mktemp("sequential")
    outcome = run_sweep(load_config(config_path), out)
    assert (outcome.finished, outcome.failed) == (4, 0)
    return {r.run_id: r for r in ResultStore(out).records()}


def stored_rows(out: Path) -> list[tuple[str, str, float]]:
    try:
        with sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT run_id, status, finished_at FROM runs").fetchall()
    except sqlite3.OperationalError:  # the driver has not created the file or its table yet
        return []


def assert_same_results(out: Path, sequential: dict[str, SweepRecord]) -> None:
    parallel = {r.run_id: r for r in ResultStore(out).records()}
    assert parallel.keys() == sequential.keys()
    for run_id, record in parallel.items():
        for field in DETERMINISTIC:
            assert getattr(record, field) == getattr(sequential[run_id], field), (run_id, field)
        assert record.pruning["layers"] == sequential[run_id].pruning["layers"], run_id


def test_without_ray_workers_say_how_to_install_it(config_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["sweep", str(config_path), "--out", str(tmp_path), "--workers", "2"]) == 2
    assert "needs Ray, an optional extra: pip install 'infoprune[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "results.sqlite").exists()
    with pytest.raises(SystemExit, match="2"):
        main(["sweep", str(config_path), "--out", str(tmp_path), "--workers", "0"])
    assert "argument --workers: must be an integer ≥ 1, got 0" in capsys.readouterr().err


@needs_ray
def test_a_killed_driver_loses_nothing_and_the_resumed_sweep_equals_the_sequential_one(
    ray_cluster, config_path, sequential, tmp_path
):
    from infoprune.experiments.parallel import RayExecutor

    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    # no --workers: as many runs at once as the cluster's 2 CPUs fit
    command = [sys.executable, "-m", "infoprune.cli", "sweep", str(config_path), "--out", str(out),
               "--ray-address", address, "--threads", "1"]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not stored_rows(out):
        assert driver.poll() is None and time.monotonic() < deadline, "the driver stored no run"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = stored_rows(out)
    assert 1 <= len(before) < 4 and all(status == OK for _, status, _ in before)

    outcome = run_sweep(load_config(config_path), out, executor=RayExecutor(workers=2, threads=1))
    assert (outcome.skipped, outcome.finished, outcome.failed) == (len(before), 4 - len(before), 0)
    after = stored_rows(out)
    assert sorted(run_id for run_id, _, _ in after) == sorted(r.run_id for r in plan(load_config(config_path)))
    assert set(before) <= set(after)  # the runs stored before the kill were neither re-run nor re-stored
    assert_same_results(out, sequential)


def dies_once_in_prune(config, data, on_stage=None):
    """The pipeline, logging each attempt; MIPP's second level kills its worker the first time it
    reaches the prune stage. Logs whether the base model was already cached when the run began."""
    out = Path(config.cache_dir).parent
    level = config.method_params.get("confidence", config.method_params.get("ratio"))
    name = f"{config.method}-{level}"
    cached = any(Path(config.cache_dir).glob("*.pt"))
    with open(out / "attempts.log", "a") as log:
        log.write(f"{name} cached={cached}\n")
    marker = out / "killed-once"

    def stage(stage_name: str) -> None:
        if name == "mipp-0.75" and stage_name == "prune" and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    return run(config, data, on_stage=stage)


@needs_ray
def test_a_killed_worker_is_retried_once_and_its_run_stored_once(ray_cluster, config_path, sequential, tmp_path):
    from infoprune.experiments.parallel import RayExecutor

    outcome = run_sweep(load_config(config_path), tmp_path, runner=dies_once_in_prune, executor=RayExecutor(workers=2, threads=1))
    assert (outcome.finished, outcome.failed) == (4, 0)
    attempts = Counter((tmp_path / "attempts.log").read_text().split()[::2])
    assert len(attempts) == 4 and attempts.pop("mipp-0.75") == 2 and set(attempts.values()) == {1}
    # the base model was trained once, by its own task, before any run began
    assert "cached=False" not in (tmp_path / "attempts.log").read_text()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["lenet5-mnist-n2000-1ep-lr0.01-seed0.pt"]
    assert sorted(status for _, status, _ in stored_rows(tmp_path)) == [OK] * 4
    assert_same_results(tmp_path, sequential)


def always_dies(config, data, on_stage=None):
    if config.method_params.get("confidence") == 0.75:
        os.kill(os.getpid(), signal.SIGKILL)
    return run(config, data, on_stage=on_stage)


@needs_ray
def test_a_worker_that_dies_twice_fails_its_run_and_the_next_sweep_retries_it(ray_cluster, config_path, tmp_path):
    from infoprune.experiments.parallel import RayExecutor

    config = load_config(config_path)
    outcome = run_sweep(config, tmp_path, runner=always_dies, executor=RayExecutor(workers=2, threads=1))
    assert (outcome.finished, outcome.failed) == (2, 2)
    errors = {r.label: r.error for r in ResultStore(tmp_path).records(FAILED)}
    assert errors["mipp"].startswith("WorkerCrashedError")
    assert "did not finish successfully" in errors["l1"]  # the run matching it
    outcome = run_sweep(config, tmp_path, executor=RayExecutor(workers=2, threads=1))
    assert (outcome.skipped, outcome.finished, outcome.failed) == (2, 2, 0)
    assert sorted(status for _, status, _ in stored_rows(tmp_path)) == [OK] * 4


def test_the_progress_bar_lists_the_runs_in_flight(config_path):
    from infoprune.experiments.parallel import in_flight_line

    runs = plan(load_config(config_path))
    assert in_flight_line(runs[:2]) == "2 in flight: mipp 0 (trained, seed 0); l1 0 (trained, seed 0)"
    assert in_flight_line([]) == "0 in flight"


def test_a_run_task_pins_torch_to_its_cpu_share(config_path, tmp_path):
    """The worker's side of a run, called in this process: torch gets the run's CPUs as threads."""
    import torch

    from infoprune.experiments.parallel import _run_task
    from infoprune.experiments.sweep import SweepJob

    seen = []

    def fake_run(run_config, data, on_stage=None):
        seen.append(torch.get_num_threads())
        result = SimpleNamespace(masks={"fc": torch.ones(2, dtype=torch.bool)}, input_mask=None)
        return result, stand_in_record({"units_removed_fraction": 0.0})

    planned = plan(load_config(config_path))[0]
    data = SimpleNamespace(train=SimpleNamespace(inputs=torch.zeros(2, 1, 28, 28)))
    job = SweepJob(load_config(config_path), tmp_path, runner=fake_run)
    try:
        status, record = _run_task(planned, job, ({"confidence": 0.5}, 0.5), data, 3, None)
    finally:
        torch.set_num_threads(1)
    assert (status, seen, record.masks) == (OK, [3], {"fc": "11"})
