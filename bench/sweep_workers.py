"""Wall time of one sweep with ``--workers 2`` (Ray) against ``--workers 1`` (sequential), issue 15.

Runs ``infoprune sweep CONFIG --threads 1`` into fresh folders, once per worker count, and prints
each wall time, the ratio, and whether both sweeps stored the same results (the deterministic
fields). The base model is trained once per sweep, before its runs can start, so that part
does not run in parallel; ``--base-cache DIR`` copies a cache of trained base models (e.g. an
earlier sweep's ``OUT/cache``) into every sweep's folder first, to time the runs alone.

    PYTHONPATH=src python bench/sweep_workers.py                         # bench/lenet5-mnist-subset.toml
    PYTHONPATH=src python bench/sweep_workers.py configs/lenet5-mnist.toml --workers 1 2 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from infoprune.experiments.results import ResultStore

DETERMINISTIC = ("masks", "accuracy_original", "accuracy_pruned", "accuracy_retrained", "level", "collapsed")


def sweep(config: Path, out: Path, workers: int) -> float:
    command = [sys.executable, "-m", "infoprune.cli", "sweep", str(config), "--out", str(out), "--threads", "1"]
    start = time.perf_counter()
    subprocess.run(command + ["--workers", str(workers)], check=True, env={**os.environ, "INFOPRUNE_PROGRESS": "0"})
    return time.perf_counter() - start


def same_results(a: Path, b: Path) -> bool:
    first, second = ({r.run_id: r for r in ResultStore(p).records()} for p in (a, b))
    return first.keys() == second.keys() and all(
        getattr(first[k], f) == getattr(second[k], f) for k in first for f in DETERMINISTIC
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, nargs="?", default=Path(__file__).parent / "lenet5-mnist-subset.toml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-sweep-workers"))
    parser.add_argument("--base-cache", type=Path, help="trained base models to start every sweep with")
    args = parser.parse_args()
    seconds, outs = {}, {}
    for workers in args.workers:
        out = args.out / f"workers{workers}"
        shutil.rmtree(out, ignore_errors=True)
        if args.base_cache is not None:
            shutil.copytree(args.base_cache, out / "cache")
        seconds[workers], outs[workers] = sweep(args.config, out, workers), out
        print(f"--workers {workers}: {seconds[workers]:.1f} s", flush=True)
    first = args.workers[0]
    for workers in args.workers[1:]:
        print(f"--workers {workers} vs {first}: {seconds[first] / seconds[workers]:.2f}x faster, "
              f"same results: {same_results(outs[first], outs[workers])}")  # fmt: skip


if __name__ == "__main__":
    main()
