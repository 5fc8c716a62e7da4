"""The results of a sweep: one SQLite row per run, written the moment the run finishes.

Each write is its own transaction, so a sweep killed at any point leaves every finished run
stored and no half-written one. A run is keyed by its id; storing it again (a failed run
retried on resume) replaces the row, so every run is recorded exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from infoprune.experiments.record import FailedRun, SweepRecord

RESULTS_FILE = "results.sqlite"
OK, FAILED = "ok", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    finished_at REAL NOT NULL,
    record TEXT NOT NULL
)
"""


class ResultsError(ValueError):
    """A results file that cannot be read or written; the message names the file and the fix."""


class ResultStore:
    """Runs stored under ``folder/results.sqlite``: ``put`` one, ``get`` one, ``records`` all."""

    def __init__(self, folder: str | Path, create: bool = True) -> None:
        self.path = Path(folder) / RESULTS_FILE
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"No sweep results in {folder} (expected {self.path}); run `infoprune sweep` first.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction; a damaged file becomes a :class:`ResultsError`."""
        try:
            with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
                yield db
        except sqlite3.OperationalError as error:  # locked for long, unwritable folder, disk full
            raise ResultsError(f"{self.path} cannot be used (sqlite3: {error}); check that its folder is writable.") from error
        except sqlite3.DatabaseError as error:  # "file is not a database", "database disk image is malformed"
            raise ResultsError(
                f"{self.path} is not a readable results database (sqlite3: {error}). Move it aside to start "
                "the sweep afresh, or restore it from a copy."
            ) from error

    def put(self, run_id: str, status: str, record: SweepRecord | FailedRun) -> None:
        """Store (or replace) the run ``run_id`` in one transaction."""
        with self._connection() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs (run_id, status, finished_at, record) VALUES (?, ?, ?, ?)",
                (run_id, status, time.time(), json.dumps(record.to_json())),
            )

    def get(self, run_id: str) -> tuple[str, SweepRecord | FailedRun] | None:
        """``(status, record)`` of ``run_id``, or None when it was never stored."""
        with self._connection() as db:
            row = db.execute("SELECT status, record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else (row[0], self._typed(*row))

    def _typed(self, status: str, text: str) -> SweepRecord | FailedRun:
        """The stored JSON ``text`` as the record type of ``status``; a :class:`ResultsError`
        naming the file when it does not read as one."""
        try:
            data = json.loads(text)
            return SweepRecord.from_json(data) if status == OK else FailedRun.from_json(data)
        except (TypeError, ValueError) as error:
            raise ResultsError(
                f"{self.path} holds a run record that cannot be read ({error}); it was written by other "
                "code. Move the file aside to start the sweep afresh."
            ) from None

    def statuses(self) -> dict[str, str]:
        """``{run_id: status}`` of every stored run."""
        with self._connection() as db:
            return dict(db.execute("SELECT run_id, status FROM runs"))

    def records(self, status: str | None = OK) -> list[SweepRecord | FailedRun]:
        """The stored records with ``status`` (all when None), in the order they finished:
        :class:`SweepRecord` for finished runs, :class:`FailedRun` for failed ones."""
        query, args = "SELECT status, record FROM runs", ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        with self._connection() as db:
            rows = db.execute(query + " ORDER BY finished_at, run_id", args).fetchall()
        return [self._typed(*row) for row in rows]
