"""ONNX export (round trip against ONNX Runtime, the CLI, the missing-extra error) and latency."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import infoprune
from infoprune import cli
from infoprune.experiments.pipeline import measured_latency
from infoprune.io import ONNX_OPSET, export_onnx, require_onnx, save_pruned
from infoprune.metrics import interleaved_timings, latency_profiles
from infoprune.models import build_model

from records import stand_in_record

onnxruntime = pytest.importorskip("onnxruntime")


def pruned(model_name: str, shape: tuple[int, ...]) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(16, *shape)
    return infoprune.prune(build_model(model_name).eval(), x, method="tp-magnitude", ratio=0.4, device="cpu").model, x


@pytest.mark.parametrize("model_name, shape", [("lenet5", (1, 28, 28)), ("resnet20", (3, 32, 32))])
def test_onnx_round_trip_matches_torch(model_name, shape, tmp_path):
    model, x = pruned(model_name, shape)
    exported = export_onnx(model, x[:2], tmp_path / "model.onnx")
    assert exported.opset == ONNX_OPSET and exported.max_abs_error <= 1e-4
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.eval()(x)
    (got,) = session.run(None, {"input": x.numpy()})  # a batch size other than the example's
    assert got.shape == tuple(expected.shape)
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)
    assert not list(tmp_path.glob(".*")), "no temporary file left behind"


def test_the_onnx_check_is_relative_to_the_output_scale(tmp_path, monkeypatch):
    """Float32 kernels that sum in another order differ in proportion to the values: an error of
    0.05 on outputs of ~1000 passes (allowed 1e-4 × max |output|), 0.5 is refused, with the bound."""
    model = torch.nn.Linear(8, 3)
    with torch.no_grad():
        model.weight.fill_(0.0)
        model.bias.copy_(torch.tensor([1000.0, -500.0, 0.0]))
    x = torch.randn(2, 8)
    run = onnxruntime.InferenceSession.run

    def shifted_by(delta: float):
        def fake_run(self, names, feeds):
            return [output + delta for output in run(self, names, feeds)]
        return fake_run

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", shifted_by(0.05))
    assert export_onnx(model, x, tmp_path / "close.onnx").max_abs_error == pytest.approx(0.05, rel=1e-3)
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", shifted_by(0.5))
    with pytest.raises(ValueError) as refused:
        export_onnx(model, x, tmp_path / "far.onnx")
    assert "differs from torch by up to 0.5 (> 0.1, 0.0001 of the largest output)" in str(refused.value)


def test_missing_onnxruntime_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    message = r"onnxruntime is missing\): pip install 'infoprune\[onnx\]'"
    with pytest.raises(ImportError, match=message):
        require_onnx()
    model, x = pruned("lenet5", (1, 28, 28))
    with pytest.raises(ImportError, match=message):
        export_onnx(model, x[:2], tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
    # a run then records torch latency only
    latency = measured_latency({"pruned": model}, x[:2])
    assert "onnxruntime" not in latency["pruned"] and set(latency["pruned"]["cpu"]) == {"1", "64"}


def test_export_command_writes_a_checked_onnx_file(tmp_path, capsys):
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    result = infoprune.prune(build_model("lenet5").eval(), x, method="l1", ratio=0.5, device="cpu", allow_collapse=True)
    run_dir = tmp_path / "run"
    save_pruned(run_dir / "pruned_model.pt", result.model, result.masks)
    record = stand_in_record(config={"model": "lenet5"}, num_classes=10, input_shape=[1, 28, 28])
    (run_dir / "summary.json").write_text(json.dumps(record.to_json()))
    assert cli.main(["export", str(run_dir), "--onnx", str(tmp_path / "model.onnx")]) == 0
    assert f"(ONNX opset {ONNX_OPSET}); ONNX Runtime matches torch" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), result.model.eval()(x).detach(), atol=1e-4, rtol=1e-4)
    assert cli.main(["export", str(tmp_path), "--onnx", str(tmp_path / "other.onnx")]) == 2
    assert "has no summary.json and pruned_model.pt" in capsys.readouterr().err


def test_latency_profiles_time_every_backend_and_batch(tmp_path):
    model, x = pruned("lenet5", (1, 28, 28))
    path = export_onnx(model, x[:2], tmp_path / "model.onnx").path
    profiles = latency_profiles({"pruned": model}, x[:2], repeats=3, onnx_paths={"pruned": path})
    profile = profiles["pruned"]
    assert profile["threads"] == torch.get_num_threads() and profile["batch_sizes"] == [1, 64]
    for backend in ("cpu", "onnxruntime"):
        for batch in ("1", "64"):
            timing = profile[backend][batch]
            assert 0 < timing["min"] <= timing["median"]


def test_interleaved_timings_run_the_calls_in_turn():
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    timings = interleaved_timings(calls, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4  # warm-up and repeats, the calls taking turns
    assert set(timings) == {"a", "b"} and all(0 < t["min"] <= t["median"] for t in timings.values())
