"""A MIPP run killed after its first layer continues from its state file, to the same masks."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import infoprune
from infoprune.models import build_model

SETTINGS = dict(hidden_size=32, fit_iterations=30, refit_iterations=3, ordering_iterations=3, confidence=0.99)

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(int(sys.argv[2]))
    sys.path.insert(0, sys.argv[3])
    from test_mipp_resume import lenet_and_inputs, SETTINGS
    import infoprune
    from infoprune.methods.mipp import walk
    units_into_second_layer = int(sys.argv[4])  # 0: kill as the second layer starts
    engine = sys.argv[5]
    walk.SNAPSHOT_SECONDS = 0.0  # inside a layer, write the state after every unit

    class KillInSecondLayer:  # a progress bar that kills the process in MIPP's second layer
        layers, units = [], 0
        def __init__(self, total=None, desc=""):
            self.n = 0
        def set_description(self, desc):
            if desc not in self.layers:
                self.layers.append(desc)
            self.check()
        def update(self, k=1):
            self.n += k
            if len(self.layers) == 2 and k == 1:
                KillInSecondLayer.units += 1
            self.check()
        def check(self):
            if len(self.layers) == 2 and self.units >= units_into_second_layer:
                os.kill(os.getpid(), signal.SIGKILL)
        def close(self):
            pass

    model, x = lenet_and_inputs()
    infoprune.prune(model, x, "mipp", device="cpu", checkpoint=sys.argv[1], progress=KillInSecondLayer, engine=engine, **SETTINGS)
    """
)


def lenet_and_inputs():
    torch.manual_seed(0)
    return build_model("lenet5"), torch.randn(240, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def uninterrupted():
    model, x = lenet_and_inputs()
    return {engine: infoprune.prune(model, x, "mipp", device="cpu", engine=engine, **SETTINGS) for engine in ("gaussian", "fast")}


@pytest.mark.parametrize("engine, units_into_second_layer", [("gaussian", 0), ("fast", 0), ("fast", 5)])
def test_killed_run_resumes_to_the_masks_of_an_uninterrupted_run(tmp_path, uninterrupted, engine, units_into_second_layer):
    """Killed after its first layer (0), or 5 units into its second, with in-layer snapshots
    (the MLP engines; the closed-form engine re-tests an unfinished layer, in seconds)."""
    uninterrupted = uninterrupted[engine]
    model, x = lenet_and_inputs()
    state = tmp_path / "mipp-state.pt"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(state), str(torch.get_num_threads()), os.path.dirname(__file__),
         str(units_into_second_layer), engine],
        capture_output=True, text=True, timeout=600,
    )
    assert child.returncode == -9, child.stderr  # killed, not finished
    stored = torch.load(state, weights_only=True)
    layers = [key.split("|")[0] + ("|partial" if key.endswith("partial") else "") for key in stored["layers"]]
    assert layers == (["fc2"] if units_into_second_layer == 0 else ["fc2", "fc1|partial"]), layers
    if units_into_second_layer:
        partial = next(v for k, v in stored["layers"].items() if k.endswith("partial"))
        # the last snapshot before the kill (the fast engine may decide a block of units at once)
        assert 0 < int(partial["tested"]) < units_into_second_layer
    resumed = infoprune.prune(model, x, "mipp", device="cpu", checkpoint=state, engine=engine, **SETTINGS)
    for name, mask in uninterrupted.masks.items():
        assert torch.equal(resumed.masks[name], mask), name
    assert resumed.details["layers"] == uninterrupted.details["layers"]


def test_a_state_file_from_other_settings_is_refused(tmp_path):
    model, x = lenet_and_inputs()
    state = tmp_path / "mipp-state.pt"
    infoprune.prune(model, x, "mipp", device="cpu", checkpoint=state, **SETTINGS)
    other = {**SETTINGS, "confidence": 0.9}
    with pytest.raises(ValueError, match=r"written by a run with other settings.*settings\.confidence: 0\.99 there, 0\.9 here"):
        infoprune.prune(model, x, "mipp", device="cpu", checkpoint=state, **other)
    with pytest.raises(ValueError, match=r"other settings \(data\)"):
        infoprune.prune(model, x + 1, "mipp", device="cpu", checkpoint=state, **SETTINGS)


def test_an_unreadable_state_file_is_refused(tmp_path):
    state = tmp_path / "mipp-state.pt"
    state.write_text("not a state file")
    model, x = lenet_and_inputs()
    with pytest.raises(ValueError, match=r"cannot be read .* delete it"):
        infoprune.prune(model, x, "mipp", device="cpu", checkpoint=state, **SETTINGS)


def test_the_cli_keeps_the_state_file_under_out_for_methods_that_resume(tmp_path):
    from infoprune import cli

    args = cli.build_parser().parse_args(["prune", "--out", str(tmp_path), "--method", "mipp", "--flops", "0.5"])
    params = cli.method_params(args)
    assert cli.state_file(args, params) == tmp_path / "mipp-state.pt"
    assert params == {"flops": 0.5, "checkpoint": str(tmp_path / "mipp-state.pt")}
    args = cli.build_parser().parse_args(["prune", "--out", str(tmp_path), "--method", "l1", "--ratio", "0.5"])
    params = cli.method_params(args)
    assert cli.state_file(args, params) is None and params == {"ratio": 0.5}
