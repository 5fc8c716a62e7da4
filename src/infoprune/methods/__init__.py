"""Pruning methods, looked up by name.

Each method lives in its own module and registers itself with :func:`register`; the
registry imports those modules lazily so that a method's dependencies load only when used.
"""

from __future__ import annotations

import importlib

from infoprune.methods.base import CliOption, MaskDecision, PruningContext, PruningMethod, Resumable

DEFAULT_METHOD = "mipp"
"""The method ``infoprune.prune`` and ``infoprune prune`` use when none is named."""

# name -> module that defines (and registers) it
_METHOD_MODULES: dict[str, str] = {
    "mipp": "infoprune.methods.mipp",
    "itpruner": "infoprune.methods.itpruner",
    "mint": "infoprune.methods.mint",
    "random": "infoprune.methods.magnitude",
    "l1": "infoprune.methods.magnitude",
    "snip": "infoprune.methods.saliency",
    "grasp": "infoprune.methods.saliency",
    "synflow": "infoprune.methods.saliency",
    "thinet": "infoprune.methods.thinet",
    "sosp": "infoprune.methods.sosp",
    "reinit": "infoprune.methods.reinit",
    **{name: "infoprune.methods.torch_pruning_criteria" for name in ("tp-magnitude", "tp-taylor", "tp-lamp", "tp-bn-scale", "tp-hessian")},
}
_REGISTRY: dict[str, type[PruningMethod]] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator: make ``cls`` available as ``infoprune.prune(..., method=cls.name)``."""
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    """Names accepted by ``method=``."""
    return sorted(set(_METHOD_MODULES) | set(_REGISTRY))


def get_method(name: str) -> type[PruningMethod]:
    """The method class registered as ``name``; a clear error lists the valid names."""
    if name not in _REGISTRY and name in _METHOD_MODULES:
        importlib.import_module(_METHOD_MODULES[name])
    if name not in _REGISTRY:
        raise ValueError(f"Unknown pruning method {name!r}; available: {', '.join(available_methods())}.")
    return _REGISTRY[name]


__all__ = [
    "DEFAULT_METHOD", "CliOption", "MaskDecision", "PruningContext", "PruningMethod", "Resumable", "available_methods",
    "get_method", "register",
]
