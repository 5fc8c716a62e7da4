"""Saving and loading pruned models without pickling code; exporting them as ONNX.

A pruned model is stored as tensors only (``torch.save`` of a dict of tensors, read back
with ``weights_only=True``): its state dict and the masks that produced it. Loading
rebuilds the architecture from an unpruned instance (or a registry name), re-applies the
masks with the same surgery and loads the weights. An architecture fingerprint (the module
tree, and the outputs on a fixed probe input) is stored too, so that loading into another
architecture is refused instead of silently computing something else. Writes are atomic (temp file +
``os.replace``), so an interrupted save never leaves a truncated file behind.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infoprune.progress import logger
from infoprune.running import evaluating, preserved_rng, primary_output


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temp file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def check_writable(folder: Path, what: str) -> None:
    """A ValueError unless a file can be created in the existing ``folder`` (checked by
    creating and removing a temp file; ``what`` names the option, e.g. ``--out``)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(
            f"{what} {folder} is not writable ({error.strerror or type(error).__name__}); pass a folder you can "
            "write to."
        ) from None


@contextmanager
def exclusive_folder(
    folder: Path, lock_name: str, command: str, on_busy: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold ``folder/lock_name`` (an advisory ``flock``) for the block, so two runs never mix
    their files in one folder. When another process holds it: a ValueError naming the holder,
    or, with ``on_busy``, ``on_busy(holder)`` and a wait for it to end. Without ``fcntl``
    (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(folder / lock_name, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            if on_busy is None:
                raise ValueError(
                    f"Another `{command}` ({holder}) is writing to {folder}; wait for it to end or pass another folder."
                ) from None
            on_busy(holder)
            fcntl.flock(file, fcntl.LOCK_EX)
            logger.info("the other `%s` on %s ended; going on", command, folder)
        file.seek(0)
        file.truncate(0)
        file.write(f"pid {os.getpid()} on {socket.gethostname()}")
        file.flush()
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def set_aside(path: Path, what: str, problem: str, error: Exception, then: str) -> None:
    """Move a ``path`` that cannot be used to ``PATH.corrupt``, with a warning naming ``what`` it
    was, the ``problem`` ("cannot be read"), the ``error`` and what happens ``then`` (so a
    corrupt cache entry is rebuilt, never reused or lost)."""
    corrupt = path.with_name(path.name + ".corrupt")
    path.replace(corrupt)
    logger.warning("the %s %s %s (%s): moved it to %s and %s", what, path, problem, type(error).__name__, corrupt, then)


def architecture(model: nn.Module) -> list[str]:
    """The module tree, one ``name: Type(settings)`` line per module (shapes and activations included)."""
    return [f"{name or '(root)'}: {type(module).__name__}({module.extra_repr()})" for name, module in model.named_modules()]


PROBE_SEED = 0


def probe_input(probe: dict) -> torch.Tensor:
    """The probe input a file's ``probe`` entry names: its stored token ids, or two fixed, seeded
    Gaussian samples of its ``shape`` (files from before token ids were stored: seeded ids
    below its ``tokens``)."""
    if "input" in probe:
        return probe["input"]
    generator = torch.Generator().manual_seed(PROBE_SEED)
    if "tokens" in probe:
        return torch.randint(0, probe["tokens"], (2, *probe["shape"]), generator=generator)
    return torch.randn((2, *probe["shape"]), generator=generator)


def probe_output(model: nn.Module, probe: torch.Tensor) -> torch.Tensor | None:
    """The model's output (eval mode, on the CPU) on ``probe``, None unless a tensor."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    probe = probe.to(device)
    with evaluating(model):
        output = model(probe)
    return output.detach().cpu() if isinstance(output, torch.Tensor) else None


def save_pruned(
    path: str | Path,
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    input_mask: torch.Tensor | None = None,
    example_input: torch.Tensor | None = None,
) -> None:
    """Write the pruned ``model`` (its weights) and the masks that shaped it to ``path``.

    Stored with them, to recognise the architecture on loading: the module tree and, given
    ``example_input`` (any batch of the model's inputs; only its per-sample shape is used),
    the output on a fixed probe input (seeded Gaussian samples, or the first two of
    ``example_input`` when it holds token ids).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_pruned needs the pruned nn.Module (result.model), got {type(model).__name__}.")
    if not isinstance(masks, dict) or not all(isinstance(m, torch.Tensor) for m in masks.values()):
        raise TypeError(
            f"save_pruned needs the masks that shaped the model (result.masks: layer name -> bool tensor), got "
            f"{type(masks).__name__}: load_pruned rebuilds the architecture from them."
        )
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "masks": {k: v.cpu() for k, v in masks.items()},
        "input_mask": None if input_mask is None else input_mask.cpu(),
        "architecture": architecture(model),
    }
    if example_input is not None:
        probe: dict[str, Any] = {"shape": list(example_input.shape[1:])}
        if not example_input.is_floating_point():  # token ids: the model's own (random ids may be invalid for it)
            probe["input"] = example_input[:2].detach().cpu()
        output = probe_output(model, probe_input(probe))
        if output is not None:
            payload["probe"] = {**probe, "output": output}
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def read_pruned_file(path: Path) -> dict[str, Any]:
    """The payload of a file written by :func:`save_pruned`; our own error for anything else."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty, not a pruned model (an interrupted copy?); save one with infoprune.io.save_pruned.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any load failure; torch's own advice (unpickling code) must not be passed on
        raise ValueError(
            f"{path} is not a pruned model written by infoprune.io.save_pruned: it cannot be read as tensors "
            f"({type(error).__name__}). infoprune loads tensors only and never unpickles code; write the file "
            "with save_pruned(path, result.model, result.masks)."
        ) from None
    if isinstance(payload, dict) and {"state_dict", "masks", "input_mask"} <= set(payload):
        return payload
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(
            f"{path} holds a plain state dict (keys like {next(iter(payload))!r}), not a pruned model: it lacks the "
            "masks that shape the architecture. Write pruned models with save_pruned(path, result.model, "
            "result.masks); load a plain state dict with model.load_state_dict(torch.load(path, weights_only=True))."
        )
    raise ValueError(f"{path} holds a {type(payload).__name__}, not a pruned model written by infoprune.io.save_pruned.")


def load_pruned(path: str | Path, unpruned: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` from an ``unpruned`` instance of its architecture.

    Refuses (ValueError) a model whose architecture differs from the saved one: another module
    tree, or, for files saved with an example input, other outputs on the probe input (e.g.
    the same shapes with another activation function), and an ``example_input`` the model
    does not run on. ``unpruned`` itself is not modified (its copy is rebuilt), nor
    is the global random state.
    """
    with preserved_rng():
        return _load_pruned(path, unpruned, example_input)


def _load_pruned(path: str | Path, unpruned: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The body of :func:`load_pruned`."""
    from infoprune.network import Network  # here, so that training (which writes through this module) needs no graph

    path = Path(path)
    payload = read_pruned_file(path)
    if not isinstance(unpruned, nn.Module) or not isinstance(example_input, torch.Tensor):
        raise TypeError(
            f"load_pruned(path, unpruned, example_input) needs an nn.Module and a tensor, got "
            f"{type(unpruned).__name__} and {type(example_input).__name__}."
        )
    unpruned = copy.deepcopy(unpruned).cpu().eval()  # the caller's model keeps its mode and device
    example = example_input.cpu()
    _check_example(unpruned, example, payload.get("probe"), path)
    try:
        pruned = Network(unpruned, example).apply_masks(payload["masks"], payload["input_mask"])
    except (KeyError, ValueError) as error:
        reason = error.args[0] if error.args else type(error).__name__
        raise ValueError(f"{path} does not fit the given model: {reason} Pass the architecture it was saved from.") from None
    _check_same(architecture(pruned), payload.get("architecture"), path)
    try:
        pruned.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit the given model: {error}") from None
    probe = payload.get("probe")
    if probe is not None:
        output = probe_output(pruned, probe_input(probe))
        if output is None or output.shape != probe["output"].shape or not torch.allclose(output, probe["output"], rtol=1e-4, atol=1e-5):
            difference = "" if output is None or output.shape != probe["output"].shape else (
                f" (largest difference {float((output - probe['output']).abs().max()):.3g})"
            )
            raise ValueError(
                f"{path} was saved from another architecture: with its weights loaded, the given model computes "
                f"other outputs on the probe input{difference}. Pass an instance of the model it was saved from "
                "(same layers and activation functions)."
            )
    return pruned.eval()


def _check_example(model: nn.Module, example: torch.Tensor, probe: dict | None, path: Path) -> None:
    """A ValueError unless ``example`` is a batch the unpruned ``model`` runs on (and, for a
    file saved with a probe, of the saved per-sample shape)."""
    shape = tuple(example.shape[1:])
    if probe is not None and shape != tuple(probe["shape"]):
        raise ValueError(
            f"The example input has samples of shape {shape}, but {path} was saved for samples of shape "
            f"{tuple(probe['shape'])}; pass a batch such as torch.zeros(2, {', '.join(map(str, probe['shape']))})."
        )
    try:
        with evaluating(model):
            model(example[:2])
    except Exception as error:  # any failure: the example does not fit the model
        raise ValueError(
            f"The given model rejects the example input of shape {tuple(example.shape)}: {type(error).__name__}: "
            f"{error}. Pass a batch of inputs (N, ...) shaped as the model expects."
        ) from None


def _check_same(tree: list[str], saved: list[str] | None, path: Path) -> None:
    """Refuse a module tree other than the saved one, naming the first difference."""
    if saved is None or tree == saved:
        return
    first = next((i for i, (a, b) in enumerate(zip(tree, saved)) if a != b), min(len(tree), len(saved)))
    given = tree[first] if first < len(tree) else "(nothing)"
    stored = saved[first] if first < len(saved) else "(nothing)"
    raise ValueError(
        f"{path} was saved from another architecture: module {first} is {stored!r} there but {given!r} in the "
        "given model. Pass an instance of the model it was saved from."
    )


ONNX_OPSET = 17
"""The ONNX opset of :func:`export_onnx` (ONNX Runtime ≥ 1.12 runs it)."""
ONNX_TOLERANCE = 1e-4
"""How far ONNX Runtime's outputs may differ from torch's, relative to the largest |output| (at
least 1): float32 kernels that sum in another order differ in proportion to the values (VGG11's
logits on CIFAR-sized inputs differ by 2.4e-4 at |output| ≈ 10; a wrong export by far more)."""


def require_onnx():
    """The ``onnxruntime`` module, or an ``ImportError`` that says how to install the extra."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs the packages onnx and onnxruntime ({error.name} is missing): "
            "pip install 'infoprune[onnx]'."
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class OnnxExport:
    """Where the model went, in which opset, and the largest |ONNX Runtime − torch| output gap."""

    path: Path
    opset: int
    max_abs_error: float


class RMSNormForExport(nn.Module):
    """``nn.RMSNorm`` in the operations the TorchScript ONNX exporter knows (it has no
    ``aten::rms_norm`` at any opset): ``x · rsqrt(mean(x²) + eps) · weight``, with ``nn.RMSNorm``'s
    default eps (the dtype's machine epsilon) when it has none."""

    def __init__(self, norm: nn.RMSNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(self.norm.normalized_shape), 0))
        eps = self.norm.eps if self.norm.eps is not None else torch.finfo(x.dtype).eps
        normalised = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
        return normalised if self.norm.weight is None else normalised * self.norm.weight


class PrimaryOutput(nn.Module):
    """``model``'s primary output (:func:`infoprune.running.primary_output`: the logits of a
    Hugging Face output, the first of a tuple), the one output an export writes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return primary_output(self.model(x))


def exportable(model: nn.Module) -> nn.Module:
    """``model`` (modified in place) with every ``nn.RMSNorm`` in :class:`RMSNormForExport`,
    in :class:`PrimaryOutput`."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.RMSNorm:
                setattr(parent, name, RMSNormForExport(child))
    return PrimaryOutput(model)


def diff_symbolic(g, x, n, dim, prepend, append):
    """ONNX for ``torch.diff`` with ``n=1`` (Slice, Sub; Concat for ``prepend`` / ``append``),
    which the TorchScript exporter lacks at every opset; transformers' masks call it."""
    from torch.onnx import symbolic_helper

    if symbolic_helper._get_const(n, "i", "n") != 1:
        return symbolic_helper._unimplemented("diff", "n other than 1")
    axis = symbolic_helper._get_const(dim, "i", "dim")
    parts = [t for t in (prepend, x, append) if not symbolic_helper._is_none(t)]
    x = g.op("Concat", *parts, axis_i=axis) if len(parts) > 1 else x

    def constant(value: int):
        return g.op("Constant", value_t=torch.tensor([value]))

    after = g.op("Slice", x, constant(1), constant(2**62), constant(axis))
    before = g.op("Slice", x, constant(0), constant(-1), constant(axis))
    return g.op("Sub", after, before)


def cumsum_symbolic(g, x, dim, dtype=None):
    """``torch.cumsum`` as the exporter writes it, a bool input cast to int64 first (as torch
    computes it; ONNX's CumSum takes no bool, and transformers' masks sum bools)."""
    from torch.onnx import symbolic_opset11

    if x.type().scalarType() == "Bool":
        x = g.op("Cast", x, to_i=7)  # TensorProto.INT64
    return symbolic_opset11.cumsum(g, x, dim, dtype)


EXPORT_SYMBOLICS = {"aten::diff": diff_symbolic, "aten::cumsum": cumsum_symbolic}
"""Operators the TorchScript exporter writes wrongly or not at all, as :func:`export_onnx` writes them."""


@torch.no_grad()
def export_onnx(
    model: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int = ONNX_OPSET
) -> OnnxExport:
    """Write ``model`` as ONNX (opset ``opset``, batch dimension dynamic) and check it.

    Uses ``torch.onnx.export`` with the TorchScript exporter (``dynamo=False``: it needs no
    onnxscript and is several times faster on small models), then runs the file with ONNX
    Runtime on ``example_input`` and raises ``ValueError`` unless every output is within
    ``ONNX_TOLERANCE`` of torch's, relative to the largest |output| (at least 1). The model is
    exported from a CPU copy in eval mode (``nn.RMSNorm`` written out, its primary output only:
    a Hugging Face model's logits; :func:`exportable`); it is not modified.
    Needs the ``onnx`` extra (:func:`require_onnx`).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"The ONNX destination {path} is a folder; pass a file name such as {path / 'model.onnx'}.")
    onnxruntime = require_onnx()
    cpu = exportable(copy.deepcopy(model).cpu().eval())
    example = example_input.cpu()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"The folder of the ONNX destination {path} cannot be created ({error.strerror}); pass another path.") from None
    check_writable(path.parent, "The folder of the ONNX destination")
    expected = cpu(example)  # before the export, which may leave traced state behind (transformers' models do)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(handle)
    for operator, symbolic in EXPORT_SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(operator, symbolic, opset)
    try:
        torch.onnx.export(
            cpu, (example,), temp, dynamo=False, opset_version=opset, input_names=["input"],
            output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )  # fmt: skip
        os.replace(temp, path)
    finally:
        for operator in EXPORT_SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(operator, opset)
        Path(temp).unlink(missing_ok=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_output,) = session.run(None, {"input": example.numpy()})
    error = float((torch.from_numpy(onnx_output) - expected).abs().max())
    allowed = ONNX_TOLERANCE * max(1.0, float(expected.abs().max()))
    if not error <= allowed:
        raise ValueError(
            f"The ONNX model at {path} differs from torch by up to {error:.3g} (> {allowed:.3g}, "
            f"{ONNX_TOLERANCE:g} of the largest output) on the example input: an operator is exported "
            "wrongly; try another opset."
        )
    return OnnxExport(path, opset, error)
