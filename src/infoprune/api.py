"""``infoprune.prune``: one entry point for every method, one result type."""

from __future__ import annotations

import contextlib
import copy
import inspect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from infoprune.data.base import calibration_tensors
from infoprune.methods import MaskDecision, PruningContext, PruningMethod, get_method
from infoprune.metrics import count_flops, count_params
from infoprune.network import BUDGET_ARGUMENTS, InputMasked, Network, emptied_groups
from infoprune.network.compensation import compensate as compensate_consumers
from infoprune.padding import is_padded, passing_attention_mask
from infoprune.running import evaluating, preserved_rng, primary_output
from infoprune.progress import logger, progress_bar
from infoprune.result import LayerSummary, PruningResult
from infoprune.validation import (
    check_finite_model, check_labels, check_prunable_model, check_seed, ignore_entries, resolve_device,
)

@dataclass(frozen=True)
class CollapsePolicy:
    """What :func:`prune` does with a collapsed result: ``budget`` holds the budget arguments
    the call gave (``flops``/``params``/``ratio``), ``allow`` is its ``allow_collapse``."""

    budget: dict[str, Any]
    allow: bool

    def check(self, method: str, emptied: list[str], disconnected: bool) -> None:
        """Warn about emptied layers or a disconnected network; refuse a disconnected network
        from a budgeted call unless allowed (a ValueError naming the ways out)."""
        if not (emptied or disconnected):
            return
        what = f"layer(s) {emptied} lost every unit" if emptied else "no layer is empty"  # a cut can leave none empty
        if disconnected:
            what += "; no path from the input to the output survives, so the pruned model outputs a constant"
        asked = ", ".join(f"{k}={v}" for k, v in self.budget.items())
        if disconnected and self.budget and not self.allow:
            raise ValueError(
                f"Method {method!r} at {asked} collapses the network: {what}. Ask for a smaller budget, pass "
                "min_units=1 where the method takes it, or pass allow_collapse=True (CLI: --allow-collapse) to "
                "get the collapsed result anyway."
            )
        if not disconnected:
            what += " (a path from the input to the output survives, e.g. through a skip connection)"
        label = "COLLAPSE" if disconnected else "EMPTIED LAYERS"
        logger.warning("%s: method %r%s: %s.", label, method, f" at {asked}" if asked else "", what)


def _by_name(model: nn.Module, ignore: tuple) -> tuple:
    """``ignore`` with module instances replaced by their names in ``model`` (the analysis runs on
    a copy, which holds other instances); modules not in ``model`` stay as they are, to be refused."""
    names = {id(module): name for name, module in model.named_modules()}
    return tuple(names.get(id(entry), entry) if isinstance(entry, nn.Module) else entry for entry in ignore)


def _build_method(method: str | PruningMethod, method_kwargs: dict[str, Any]) -> PruningMethod:
    """The method object: ``method`` itself when configured already, else built from its name."""
    if isinstance(method, PruningMethod):
        if method_kwargs:
            raise TypeError(
                f"prune() got a configured {type(method).__name__} and method settings {sorted(method_kwargs)}; "
                f"set them on the object ({type(method).__name__}({', '.join(f'{k}=...' for k in sorted(method_kwargs))})) "
                "or pass the method by name."
            )
        return method
    cls = get_method(method)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(method_kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"Method {method!r} does not take {unknown}; its parameters are: {accepted}.")
    return cls(**method_kwargs)


def _check_model_accepts(model: nn.Module, inputs: torch.Tensor) -> int | None:
    """Run the model on two samples; returns its number of outputs (classes) when it gives logits."""
    try:
        with evaluating(model):
            output = primary_output(model(inputs[:2]))
    except Exception as error:  # any failure here means the shapes (or dtypes) do not fit the model
        hint = "Pass inputs shaped as the model expects."
        if not inputs.is_floating_point():
            hint = (
                f"The inputs are {inputs.dtype}: pass them shaped and typed as the model expects "
                "(images stored as integers: convert them as in training, e.g. x.float() / 255)."
            )
        elif inputs.dtype != torch.float32:
            hint = f"The inputs are {inputs.dtype}: pass them shaped and typed as the model expects (e.g. x.float())."
        raise ValueError(
            f"The model rejects calibration inputs of shape {tuple(inputs.shape[1:])} (per sample): "
            f"{type(error).__name__}: {error}. {hint}"
        ) from error
    return output.shape[1] if isinstance(output, torch.Tensor) and output.dim() == 2 else None


def progress_factory(progress: Callable[..., Any] | bool | None) -> Callable[..., Any] | None:
    """The progress-bar factory ``prune`` uses: True → :func:`progress_bar`, False or None → no bars,
    a callable as given; anything else is a TypeError naming the accepted values."""
    if progress is True:
        return progress_bar
    if progress is False or progress is None:
        return None
    if not callable(progress):
        raise TypeError(
            f"progress must be True, False, None or a progress-bar factory like infoprune.progress.progress_bar, "
            f"got {progress!r}."
        )
    return progress


def prune(
    model: nn.Module,
    calibration_data,
    method: str | PruningMethod = "mipp",
    *,
    calibration_samples: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: Callable[..., Any] | bool | None = progress_bar,
    ignore: Iterable[str | type] | str | type = (),
    allow_collapse: bool = False,
    compensate: bool = False,
    **method_kwargs: Any,
) -> PruningResult:
    """Prune ``model`` structurally with ``method`` and return a :class:`PruningResult`.

    ``calibration_data``: a tensor of inputs, ``LabelledTensors``, an ``(inputs, labels)`` tuple,
    or a DataLoader yielding inputs or ``(inputs, labels)``; at most ``calibration_samples``
    samples are read (10 000 from an iterable without a length when it is None).
    ``method``: a method name with its settings as ``method_kwargs`` (e.g. ``"mipp",
    confidence=0.9``), or a configured method object (``MIPP(flops=0.5)``) and no ``method_kwargs``.
    Budgets bound what is kept: ``flops=`` / ``params=`` are fractions of the full model's
    FLOPs / parameters kept (or absolute counts); ``ratio=`` alone is the fraction of units
    removed (:mod:`infoprune.network.budget`).
    ``ignore``: layer names (or modules holding them) and module types whose channels stay
    whole, as Torch-Pruning's ``ignored_layers``; a single string is one name. The output
    layer is always left whole.
    ``allow_collapse``: a result that empties a layer or disconnects the network is always
    logged as a warning; a *budgeted* call (``flops=``, ``params=`` or ``ratio=``) that would
    return a disconnected (dead) network raises a ValueError instead, unless ``allow_collapse``
    (research sweeps pass it, to count collapses).
    ``compensate``: after surgery, each consumer reads the least-squares prediction of the removed
    units from its kept ones, fitted on the calibration inputs (a change of its weights and bias;
    :mod:`infoprune.network.compensation`): most of the one-shot accuracy a method loses comes
    back, for any method. Not in the papers; off by default.
    ``progress``: the progress-bar factory; True is the default bars, False or None no bars. The input model and the global
    random state are left as they were (``seed`` seeds a forked RNG);
    ``result.model`` is a physically smaller copy on ``device`` (CUDA when present unless given).
    A ``DataParallel`` model is pruned through its ``.module``.
    """
    seed = check_seed(seed)
    progress = progress_factory(progress)
    ignore = ignore_entries(ignore)
    pruning_method = _build_method(method, method_kwargs)
    with preserved_rng():  # a shuffling DataLoader draws from the global RNG too
        inputs, labels = calibration_tensors(calibration_data, calibration_samples)
        if inputs.shape[0] == 0:
            raise ValueError("The calibration data is empty; pass at least a few hundred samples.")
        device = resolve_device(device)
        model = check_prunable_model(model)
        check_finite_model(model)
        ignore = _by_name(model, ignore)
        given = method_kwargs or {name: getattr(pruning_method, name, None) for name in BUDGET_ARGUMENTS}
        budget = {name: given[name] for name in BUDGET_ARGUMENTS if given.get(name) is not None}
        collapse = CollapsePolicy(budget, allow_collapse)
        if not isinstance(compensate, bool):
            raise ValueError(f"compensate must be True or False, got {compensate!r}.")
        working = copy.deepcopy(model).to(device).eval()
        with passing_attention_mask(working) if is_padded(inputs) else contextlib.nullcontext():
            return _prune(
                working, inputs, labels, pruning_method.name, pruning_method, device, seed, progress, ignore, collapse,
                compensate,
            )


def _prune(
    working: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None, method: str, pruning_method,
    device: torch.device, seed: int, progress, ignore: tuple, collapse: CollapsePolicy, compensate: bool,
) -> PruningResult:
    """The body of :func:`prune` on checked arguments (run inside a forked RNG), pruning
    ``working``, a copy of the user's model, in place."""
    example = inputs[:2].to(device)
    if getattr(pruning_method, "select_inputs", False) and not inputs.is_floating_point():
        raise ValueError(
            f"select_inputs=True selects input features, but the calibration inputs are {inputs.dtype} (e.g. "
            "token ids), which cannot be masked; leave select_inputs off for integer inputs."
        )
    classes = _check_model_accepts(working, example)
    if labels is not None:
        check_labels(labels, classes, method)
        labels = labels.long()  # int32 / uint8 class indices: every loss and one_hot takes int64
    network = Network(working, example, ignore)

    torch.manual_seed(seed)
    start = time.perf_counter()
    context = PruningContext(working, network, inputs, labels, device, seed, progress)
    with torch.enable_grad():  # gradient-based methods work when called inside torch.no_grad()
        decision: MaskDecision = pruning_method.decide(context)
    seconds = time.perf_counter() - start
    masks = {name: mask.to(torch.bool).cpu() for name, mask in decision.masks.items()}
    network.check_masks(masks)

    disconnected = network.is_disconnected(masks, decision.input_mask)
    collapse.check(method, emptied_groups(masks), disconnected)
    params_before, flops_before = count_params(working), count_flops(working, example)
    if compensate and decision.after_surgery:
        steps = ", ".join(type(step).__name__ for step in decision.after_surgery)
        logger.warning(
            "compensate=True: %r's own weight steps (%s) are applied on top of the compensation and may count the "
            "removed units twice (for ThiNet, pass rescale=False).", method, steps,
        )  # fmt: skip
    compensated = compensate_consumers(network, masks, inputs, device) if compensate else []
    pruned = network.apply_masks(masks, inplace=True)  # the network describes the unpruned model no more
    for step in decision.after_surgery:
        step.apply(pruned, network, masks)
    if decision.input_mask is not None:
        pruned = InputMasked(pruned, decision.input_mask)
    full = network.full_masks(masks)
    return PruningResult(
        method=pruning_method.name,
        masks=full,
        model=pruned,
        layers={group.name: LayerSummary(int(full[group.name].sum()), group.units) for group in network.groups},
        collapsed_layers=emptied_groups(masks),
        disconnected=disconnected,
        input_mask=decision.input_mask,
        params_before=params_before,
        params_after=count_params(pruned),
        flops_before=flops_before,
        flops_after=count_flops(pruned, example),
        seconds=seconds,
        config=pruning_method.config(),
        details=decision.details,
        after_surgery=tuple(decision.after_surgery),
        compensated=compensated,
    )
