"""Summarise bench/mipp_speed.py --jsonl records: per engine and confidence, and the issue-11 criteria.

    python bench/mipp_speed_summary.py ref.jsonl fast.jsonl ...

Per (engine, x): seeds, mean wall / CPU seconds, MLP iterations, kept range per layer, mean
re-trained accuracy. Then, per x where both engines ran: the speed-up (mean reference / mean
fast, in CPU time and iterations), whether each fast seed's per-layer kept count lies in the
reference's seed range widened by 10 % ([0.9·min, 1.1·max]), and the accuracy difference.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(paths: list[str]) -> None:
    runs = defaultdict(list)
    for path in paths:
        for line in open(path):
            record = json.loads(line)
            params = record["params"]
            if "confidence" in params:
                runs[(params["engine"], params["confidence"])].append(record)
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    for (engine, x), rs in sorted(runs.items()):
        layers = rs[0]["kept"]
        ranges = " ".join(f"{n} {min(r['kept'][n] for r in rs)}-{max(r['kept'][n] for r in rs)}" for n in layers)
        print(f"{engine:9s} x={x}: seeds {sorted(r['seed'] for r in rs)}, wall {mean(rs, 'seconds'):.0f}s, "
              f"CPU {mean(rs, 'cpu_seconds'):.1f}s, {mean(rs, 'iterations'):,.0f} it, kept {ranges}, "
              f"re-trained {mean(rs, 'accuracy_retrained'):.4f}")
    print()
    for x in sorted({x for _, x in runs}):
        ref, fast = runs.get(("reference", x)), runs.get(("fast", x))
        if not ref or not fast:
            continue
        inside = []
        for r in fast:
            for n in r["kept"]:
                low, high = min(q["kept"][n] for q in ref), max(q["kept"][n] for q in ref)
                if not 0.9 * low <= r["kept"][n] <= 1.1 * high:
                    inside.append(f"seed {r['seed']} {n} {r['kept'][n]} outside [{0.9 * low:.1f}, {1.1 * high:.1f}]")
        print(f"x={x}: speed-up CPU {mean(ref, 'cpu_seconds') / mean(fast, 'cpu_seconds'):.2f}x, "
              f"iterations {mean(ref, 'iterations') / mean(fast, 'iterations'):.2f}x, "
              f"re-trained acc fast − reference {100 * (mean(fast, 'accuracy_retrained') - mean(ref, 'accuracy_retrained')):+.2f} points "
              f"({len(ref)} reference / {len(fast)} fast seeds); kept counts: "
              + ("all inside the widened reference range" if not inside else "; ".join(inside)))


if __name__ == "__main__":
    main(sys.argv[1:])
