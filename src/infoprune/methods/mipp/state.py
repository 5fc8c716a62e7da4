"""Resumable MIPP runs: the state file of finished (and unfinished) layers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from infoprune.estimators.terc import TercProgress
from infoprune.io import atomic_write_bytes
from infoprune.methods.base import PruningContext


def content_digest(values: torch.Tensor) -> str:
    """A short content hash of a tensor (which downstream units a layer is tested against)."""
    array = values.detach().cpu().contiguous()
    return hashlib.sha256(array.numpy().tobytes() + str(tuple(array.shape)).encode()).hexdigest()[:16]


class WalkState:
    """Finished layers of a MIPP run: ``{key: (mask, details)}``, and with a ``path`` on disk.

    Written atomically after every layer (and inside a layer every ``SNAPSHOT_SECONDS``, the
    unfinished TERC as ``key|partial``), with what made it. Opening it checks that the method's settings, the
    seed, the model's weights and the calibration data are those it was written with, and
    refuses it with a message naming what differs otherwise.
    """

    VERSION = 1

    def __init__(self, path: Path | None = None, identity: dict[str, Any] | None = None, layers: dict | None = None) -> None:
        self.path, self.identity, self.layers = path, identity or {}, layers or {}

    @classmethod
    def open(cls, path: str | Path, settings: dict[str, Any], context: PruningContext) -> WalkState:
        path = Path(path)
        identity = {
            "version": cls.VERSION,
            "settings": json.loads(json.dumps(settings)),
            "seed": context.seed,
            "model": _digest_module(context.model),
            "data": content_digest(context.inputs),
        }
        if not path.exists():
            return cls(path, identity, {})
        try:
            stored = torch.load(path, weights_only=True)
            old = json.loads(stored["identity"])
        except Exception as error:  # unreadable or foreign file: never reuse it silently
            raise ValueError(
                f"The MIPP state file {path} cannot be read ({type(error).__name__}): it is not one, or it is "
                "damaged; delete it to start afresh."
            ) from None
        if old != identity:
            differ = sorted(k for k in identity if old.get(k) != identity[k])
            if "settings" in differ:
                a, b = old.get("settings", {}), identity["settings"]
                differ += [f"settings.{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in sorted(b) if a.get(k) != b.get(k)]
            raise ValueError(
                f"The MIPP state file {path} was written by a run with other settings ({'; '.join(differ)}); "
                "delete it, or pass another checkpoint=, to start afresh."
            )
        return cls(path, identity, stored["layers"])

    def get(self, key: str) -> tuple[torch.Tensor, dict] | None:
        entry = self.layers.get(key)
        return None if entry is None else (entry["mask"], json.loads(entry["details"]))

    def put(self, key: str, mask: torch.Tensor, details: dict) -> None:
        self.layers[key] = {"mask": mask.cpu(), "details": json.dumps(details)}
        self.layers.pop(f"{key}|partial", None)
        self._write()

    def get_progress(self, key: str) -> TercProgress | None:
        """A layer's unfinished TERC, snapshotted by :meth:`put_progress`."""
        entry = self.layers.get(f"{key}|partial")
        if entry is None:
            return None
        decisions = json.loads(entry["decisions"])
        return TercProgress(
            int(entry["tested"]), entry["keep"], list(entry["weights"]), entry["generator"],
            {int(k): v for k, v in decisions["confidence_worse"].items()},
            {int(k): v for k, v in decisions["stopped_at"].items()}, decisions["iterations"],
            decisions["block"], decisions["arm_steps"], tuple(decisions["screen"]),
        )

    def put_progress(self, key: str, progress: TercProgress) -> None:
        decisions = {"confidence_worse": progress.confidence_worse, "stopped_at": progress.stopped_at,
                     "iterations": progress.iterations, "block": progress.block, "arm_steps": progress.arm_steps,
                     "screen": progress.screen}
        self.layers[f"{key}|partial"] = {
            "tested": torch.tensor(progress.tested), "keep": progress.keep, "weights": progress.weights,
            "generator": progress.generator_state, "decisions": json.dumps(decisions),
        }
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        state = {"identity": json.dumps(self.identity), "layers": self.layers}
        atomic_write_bytes(self.path, lambda f: torch.save(state, f))


def _digest_module(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
