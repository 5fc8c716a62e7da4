"""What the bench scripts share: appending a finished run's record to a ``--jsonl`` file."""

from __future__ import annotations

import json


def append_record(path: str | None, record: dict) -> None:
    """Append ``record`` to ``path`` as one JSON line (nothing when ``path`` is None), so a bench
    that is stopped keeps every run it finished."""
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
