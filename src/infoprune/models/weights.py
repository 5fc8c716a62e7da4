"""Loading a user's checkpoint into a registered model: ``.pth``/``.pt`` state dicts or ``.safetensors``.

``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)`` (tensors only, no pickled
code); a dict wrapping the state dict under ``"state_dict"`` or ``"model"`` is unwrapped, and a
``"module."`` prefix (left by ``DataParallel``) is stripped. ``.safetensors`` needs the
``safetensors`` package (``pip install 'infoprune[safetensors]'``).

The keys must match the model's exactly (BatchNorm's ``num_batches_tracked`` counters may be
absent, as in older torchvision files); otherwise the error lists a few missing, unexpected and
mis-shaped keys, so that a checkpoint of another architecture is refused clearly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

SHOWN = 5  # keys listed per kind of mismatch
COUNTER = "num_batches_tracked"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors stored in ``path`` (``.safetensors``, or a ``torch.save``'d state dict)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(
                f"Reading {path.name} needs the safetensors package: pip install 'infoprune[safetensors]' "
                "(or pip install safetensors)."
            ) from None
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling refusal or a corrupt file, with torch's reason
        raise ValueError(
            f"{path} is not a state dict readable with weights_only=True ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Save it with torch.save(model.state_dict(), path)."
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a dict of parameter name -> tensor).")
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return f"{len(keys)} ({shown}{', …' if len(keys) > SHOWN else ''})"


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "the checkpoint") -> None:
    """An error naming a few missing, unexpected and mis-shaped keys unless ``state`` fits ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(COUNTER)]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"shapes differ (checkpoint vs model): {_listed(shapes)}")
    if problems:
        raise ValueError(
            f"{source} does not fit {type(model).__name__}: " + "; ".join(problems) + ". Check the model name "
            "(and num_classes) match the checkpoint's architecture."
        )


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the checkpoint at ``path`` into ``model`` (in place, returned); see the module docstring."""
    state = read_state_dict(path)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=False)  # only num_batches_tracked can be absent here
    return model
