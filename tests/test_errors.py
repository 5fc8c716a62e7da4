"""Bad input gets a clear error that names the problem."""

import pytest
import torch
from torch import nn

import infoprune
from infoprune.models import build_model

TINY = dict(hidden_size=8, fit_iterations=2, refit_iterations=1, ordering_iterations=1)


def test_confidence_outside_unit_interval():
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="confidence must lie in"):
            infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "mipp", confidence=bad)


def test_model_without_prunable_layer():
    with pytest.raises(ValueError, match="no prunable hidden layer"):
        infoprune.prune(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), torch.randn(60, 1, 28, 28), "mipp")


def test_too_few_samples_says_how_many():
    with pytest.raises(ValueError, match="at least 50 calibration samples"):
        infoprune.prune(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), torch.randn(20, 4), "mipp", **TINY)


def test_empty_data():
    with pytest.raises(ValueError, match="empty"):
        infoprune.prune(build_model("lenet5"), torch.randn(0, 1, 28, 28), "mipp")
    with pytest.raises(ValueError, match="empty"):
        infoprune.prune(build_model("lenet5"), torch.utils.data.DataLoader([]), "mipp")


def test_inputs_the_model_rejects():
    with pytest.raises(ValueError, match=r"rejects calibration inputs of shape \(3, 32, 32\)"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 3, 32, 32), "mipp")


def test_non_finite_activations():
    x = torch.randn(240, 1, 28, 28)
    x[3, 0, 10, 10] = float("nan")
    with pytest.raises(ValueError, match="Non-finite"):
        infoprune.prune(build_model("lenet5"), x, "mipp", **TINY)


def test_unknown_method_and_parameter():
    with pytest.raises(ValueError, match="Unknown pruning method 'nope'.*mipp"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "nope")
    with pytest.raises(TypeError, match="does not take \\['confidance'\\]"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "mipp", confidance=0.9)


def test_bad_map_reduction():
    with pytest.raises(ValueError, match="map_reduction must be one of"):
        infoprune.prune(build_model("lenet5"), torch.randn(60, 1, 28, 28), "mipp", map_reduction="max")


def test_constant_unit_is_removed_not_crashing():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():  # hidden unit 0 is dead: constant zero after ReLU
        model[0].weight[0].zero_()
        model[0].bias[0] = -1.0
    result = infoprune.prune(model, torch.randn(60, 6), "mipp", device="cpu", **TINY)
    assert not result.masks["0"][0]
    assert 0 in result.details["layers"]["0"]["constant_units"]


# ---------------------------------------------------------------------------------------------
# Issue 17: no silent wrong results, no raw tracebacks. One test per reported case; the messages
# are asserted exactly (re.escape) where the case used to end in a traceback.

import json
import logging
import os
import random
import re
import shutil
import threading
import time
from types import SimpleNamespace

from torch.nn import functional as F

from infoprune import cli
from infoprune.data import DATASETS, DatasetSplits, LabelledTensors
from infoprune.experiments import pipeline
from infoprune.experiments.pipeline import RunConfig, base_model
from infoprune.experiments.results import OK, ResultsError, ResultStore
from infoprune.experiments.sweep import LOCK_FILE, plan, run_sweep, sweep_lock
from infoprune.experiments.sweep_config import ConfigError, parse_config
from infoprune.io import load_pruned, save_pruned
from infoprune.training import get_recipe


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def small_mlp(activation: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), activation(), nn.Linear(8, 3))


def labelled(n: int = 60) -> LabelledTensors:
    return LabelledTensors(torch.randn(n, 6, generator=torch.Generator().manual_seed(1)), torch.arange(n) % 3)


def write_tensor_file(path, n: int = 200, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    torch.save({"inputs": torch.randn(n, 1, 28, 28, generator=generator), "labels": torch.arange(n) % 10}, path)


def sweep_raw(data_dir=None, **grid) -> dict:
    training = {"train_epochs": 0, "retrain_epochs": 0, "calibration_samples": 20, "device": "cpu"}
    if data_dir is not None:
        training["data_dir"] = str(data_dir)
    return {
        "grid": {"models": ["lenet5"], "datasets": ["tensor-file"], "seeds": [0], "states": ["trained"], **grid},
        "training": training,
        "methods": [{"name": "l1", "levels": {"param": "ratio", "values": [0.25, 0.5]}}],
    }


def fake_runner(config, data, on_stage=None):
    """Stands in for the pipeline: a record with the fields the sweep reads."""
    result = SimpleNamespace(masks={}, input_mask=None)
    record = {"pruning": {"units_removed_fraction": 0.5}, "accuracy_retrained": {"test": 0.5}, "collapsed": False}
    return result, record


def fake_load(name, data_dir, seed):
    tensors = LabelledTensors(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    return DatasetSplits(name, tensors, tensors, tensors, 10)


# Item 1: every input that determines a result belongs in its identity --------------------------


def test_sweep_run_ids_change_with_the_data_and_not_with_its_path(tmp_path):
    first, copy_dir, other = tmp_path / "a", tmp_path / "moved", tmp_path / "b"
    first.mkdir(), other.mkdir()
    write_tensor_file(first / "data.pt", seed=0)
    time.sleep(0.01)
    write_tensor_file(other / "data.pt", seed=1)  # same names and sizes, other content (and mtime)
    shutil.copytree(first, copy_dir)  # copy2: times preserved, the same data elsewhere
    ids = {name: [r.run_id for r in plan(parse_config(sweep_raw(tmp_path / name)))] for name in ("a", "b", "moved")}
    assert ids["a"] != ids["b"]
    assert ids["a"] == ids["moved"]


def test_a_sweep_on_changed_data_runs_again_instead_of_reusing_results(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_tensor_file(data / "data.pt", seed=0)
    out = tmp_path / "out"
    done = run_sweep(parse_config(sweep_raw(data)), out, runner=fake_runner, load=fake_load)
    assert (done.total, done.finished) == (2, 2)
    time.sleep(0.01)
    write_tensor_file(data / "data.pt", seed=1)
    again = run_sweep(parse_config(sweep_raw(data)), out, runner=fake_runner, load=fake_load)
    assert (again.skipped, again.finished) == (0, 2)  # used to be "2 of 2 runs already stored"


def test_the_base_model_cache_key_includes_the_data(tmp_path, caplog):
    for name, seed in (("a", 0), ("b", 1)):
        write_tensor_file(tmp_path / f"{name}.pt", seed=seed)
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO, logger="infoprune")
    for name in ("a", "b"):
        config = RunConfig(dataset="tensor-file", data_dir=str(tmp_path / f"{name}.pt"), train_epochs=1, device="cpu", cache_dir=str(cache))
        base_model(config, DATASETS["tensor-file"](str(tmp_path / f"{name}.pt")), torch.device("cpu"))
    assert "reused trained base model" not in caplog.text
    keys = sorted(p.name for p in cache.glob("*.pt"))
    assert len(keys) == 2 and all(re.fullmatch(r"lenet5-tensor-file-data[0-9a-f]{10}-1ep-lr0.01-seed0\.pt", k) for k in keys)


# Item 3: counts are validated at every boundary, with one helper ------------------------------


@pytest.mark.parametrize("bad", [-5, 0, 2.5, True, "10"])
def test_calibration_samples_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=exactly(f"calibration_samples must be an integer ≥ 1 or None, got {bad!r}.")):
        infoprune.prune(small_mlp(), labelled(), "l1", ratio=0.5, calibration_samples=bad, device="cpu")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--train-epochs", "-1", "must be an integer ≥ 0, got -1"), ("--retrain-epochs", "-2", "must be an integer ≥ 0, got -2"),
     ("--calibration-samples", "-1", "must be an integer ≥ 1, got -1"), ("--calibration-samples", "0", "must be an integer ≥ 1, got 0"),
     ("--seed", "-1", "must be an integer ≥ 0, got -1"), ("--train-epochs", "1.5", "must be an integer ≥ 0, got '1.5'")],
)  # fmt: skip
def test_cli_counts_are_validated(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["prune", "--out", str(tmp_path), flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: {message}\n" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing trained or cached


def test_cli_threads_must_be_positive(tmp_path, capsys):
    (tmp_path / "sweep.toml").write_text("")
    with pytest.raises(SystemExit):
        cli.main(["sweep", str(tmp_path / "sweep.toml"), "--threads", "-3"])
    assert "argument --threads: must be an integer ≥ 1, got -3" in capsys.readouterr().err


def test_run_config_and_recipe_refuse_negative_counts():
    with pytest.raises(ValueError, match=exactly("train_epochs must be an integer ≥ 0, got -1.")):
        RunConfig(train_epochs=-1, device="cpu")
    with pytest.raises(ValueError, match=exactly("calibration_samples must be an integer ≥ 1, got -1.")):
        RunConfig(calibration_samples=-1, device="cpu")
    with pytest.raises(ValueError, match=exactly("epochs must be an integer ≥ 0, got -1.")):
        get_recipe("mnist", epochs=-1)


@pytest.mark.parametrize(("key", "value", "minimum"), [("train_epochs", -1, 0), ("calibration_samples", 2.5, 1)])
def test_sweep_config_counts_use_the_same_check(key, value, minimum):
    raw = sweep_raw()
    raw["training"][key] = value
    message = f"config [training]: {key} must be an integer ≥ {minimum}, got {value!r}."
    with pytest.raises(ConfigError, match=exactly(message)):
        parse_config(raw)


# Item 4: loading refuses another architecture and files that are not ours -----------------------


class FunctionalActivation(nn.Module):
    """Same modules and shapes as ``small_mlp``; the activation is in ``forward``."""

    def __init__(self, activation) -> None:
        super().__init__()
        self.a, self.b, self.activation = nn.Linear(6, 8), nn.Linear(8, 3), activation

    def forward(self, x):
        return self.b(self.activation(self.a(x)))


def saved_pruned(tmp_path, model, data) -> tuple:
    result = infoprune.prune(model, data, "l1", ratio=0.5, device="cpu")
    path = tmp_path / "pruned.pt"
    save_pruned(path, result.model, result.masks, result.input_mask, data.inputs[:2])
    return path, result


def test_loading_into_another_activation_module_is_refused(tmp_path):
    path, result = saved_pruned(tmp_path, small_mlp(nn.ReLU), labelled())
    loaded = load_pruned(path, small_mlp(nn.ReLU), torch.zeros(2, 6))
    torch.testing.assert_close(loaded(labelled().inputs), result.model.eval()(labelled().inputs))
    message = f"{path} was saved from another architecture: module 2 is '1: ReLU()' there but '1: Tanh()' in the given model. Pass an instance of the model it was saved from."
    with pytest.raises(ValueError, match=exactly(message)):
        load_pruned(path, small_mlp(nn.Tanh), torch.zeros(2, 6))


def test_loading_into_another_functional_activation_is_refused(tmp_path):
    torch.manual_seed(0)
    path, _ = saved_pruned(tmp_path, FunctionalActivation(F.relu), labelled())
    with pytest.raises(ValueError, match=re.escape(f"{path} was saved from another architecture: with its weights loaded, the given model computes other outputs on the probe input (largest difference")):
        load_pruned(path, FunctionalActivation(torch.tanh), torch.zeros(2, 6))


def test_files_that_are_not_pruned_models_get_our_own_errors(tmp_path):
    state_dict, empty, noise, pickled = (tmp_path / n for n in ("state.pt", "empty.pt", "noise.pt", "model.pt"))
    torch.save(small_mlp().state_dict(), state_dict)
    empty.write_bytes(b"")
    noise.write_bytes(random.Random(0).randbytes(512))  # seeded: some random bytes fail as IndexError, not unpickling
    torch.save(small_mlp(), pickled)
    cases = {
        state_dict: f"{state_dict} holds a plain state dict (keys like '0.weight'), not a pruned model: it lacks the masks that shape the architecture. Write pruned models with save_pruned(path, result.model, result.masks); load a plain state dict with model.load_state_dict(torch.load(path, weights_only=True)).",
        empty: f"{empty} is empty, not a pruned model (an interrupted copy?); save one with infoprune.io.save_pruned.",
        noise: f"{noise} is not a pruned model written by infoprune.io.save_pruned: it cannot be read as tensors (UnpicklingError). infoprune loads tensors only and never unpickles code; write the file with save_pruned(path, result.model, result.masks).",
        pickled: f"{pickled} is not a pruned model written by infoprune.io.save_pruned: it cannot be read as tensors (UnpicklingError). infoprune loads tensors only and never unpickles code; write the file with save_pruned(path, result.model, result.masks).",
    }  # fmt: skip
    for path, message in cases.items():
        with pytest.raises(ValueError, match=exactly(message)) as error:
            load_pruned(path, small_mlp(), torch.zeros(2, 6))
        cause = error.value.__cause__ or (None if error.value.__suppress_context__ else error.value.__context__)
        assert cause is None  # torch's own message (with its weights_only=False advice) is not shown


def test_save_pruned_needs_the_masks(tmp_path):
    message = "save_pruned needs the masks that shaped the model (result.masks: layer name -> bool tensor), got NoneType: load_pruned rebuilds the architecture from them."
    with pytest.raises(TypeError, match=exactly(message)):
        save_pruned(tmp_path / "p.pt", small_mlp(), None)
    assert not list(tmp_path.iterdir())


# Items 5 and 6: duplicate grid entries; two sweeps on one output folder ------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["grid"].update(models=["lenet5", "lenet5"]), "config [grid]: models lists 'lenet5' more than once; list each once."),
        (lambda raw: raw["grid"].update(datasets=["tensor-file", "tensor-file"]), "config [grid]: datasets lists 'tensor-file' more than once; list each once."),
        (lambda raw: raw["methods"][0]["levels"].update(values=[0.5, 0.5]), "config [[methods]] #1 (l1) levels: values lists 0.5 more than once; list each once."),
        (lambda raw: raw["methods"].append({**raw["methods"][0], "label": "l1-again"}), "config: method entries 'l1' and 'l1-again' are the same runs (same method, params, levels, match and states); remove one."),
    ],
)  # fmt: skip
def test_duplicate_grid_entries_are_refused(change, message):
    raw = sweep_raw()
    change(raw)
    with pytest.raises(ConfigError, match=exactly(message)):
        parse_config(raw)


def test_a_second_sweep_on_the_same_folder_waits_then_skips_what_the_first_stored(tmp_path, caplog):
    config = parse_config(sweep_raw())
    out = tmp_path / "out"
    out.mkdir()
    caplog.set_level(logging.INFO, logger="infoprune")
    outcome = {}
    with sweep_lock(out):  # the first sweep
        second = threading.Thread(target=lambda: outcome.update(r=run_sweep(config, out, runner=fake_runner, load=fake_load)))
        second.start()
        for _ in range(200):
            if "another sweep" in caplog.text:
                break
            time.sleep(0.01)
        assert f"another sweep (pid {os.getpid()} on" in caplog.text and f"is running on {out}: waiting for it to end" in caplog.text
        assert second.is_alive() and "r" not in outcome
        store = ResultStore(out)
        for planned in plan(config):  # the first sweep finishes every run
            store.put(planned.run_id, OK, {"run_id": planned.run_id})
    second.join(timeout=30)
    assert (outcome["r"].skipped, outcome["r"].finished) == (2, 0)
    assert (out / LOCK_FILE).is_file()


# The traceback list -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["itpruner", "thinet", "l1"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_calibration_data_is_refused_for_every_method(method, value):
    data = labelled()
    data.inputs[7, 1] = value
    message = "Non-finite values (NaN or inf) in the calibration inputs: 1 of 60 samples. Remove or impute those samples (and check the inputs are normalised as in training)."
    options = {"flops": 0.5, "samples": 20} if method == "itpruner" else {"ratio": 0.5}
    with pytest.raises(ValueError, match=exactly(message)):
        infoprune.prune(small_mlp(), data, method, device="cpu", **options)


def test_non_finite_weights_are_refused():
    model = small_mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    message = "The model's '2.weight' holds NaN or inf values, so every score computed from it would be meaningless; pass a model with finite weights (did its training diverge?)."
    with pytest.raises(ValueError, match=exactly(message)):
        infoprune.prune(model, labelled(), "thinet", ratio=0.5, device="cpu")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.arange(60).float() % 3, "The calibration labels given to method 'snip' are a torch.float32 tensor of shape (60,); labels must be 1-D integer class indices (the methods that read labels take them as classification targets or draw samples per class). Pass labels.long() (class indices, not one-hot), or the inputs alone for a method that needs no labels."),
        (torch.arange(60) % 2 == 0, "The calibration labels given to method 'snip' are a torch.bool tensor of shape (60,); labels must be 1-D integer class indices (the methods that read labels take them as classification targets or draw samples per class). Pass labels.long() (class indices, not one-hot), or the inputs alone for a method that needs no labels."),
        (torch.arange(60) % 5, "The calibration labels given to method 'snip' range over [0, 4]; class indices must lie in [0, 3) for the model's 3 outputs (the methods that read labels take them as classification targets or draw samples per class)."),
    ],
)  # fmt: skip
def test_labels_must_be_class_indices_the_model_can_output(labels, message):
    with pytest.raises(ValueError, match=exactly(message)):
        infoprune.prune(small_mlp(), LabelledTensors(labelled().inputs, labels), "snip", ratio=0.5, device="cpu")


def test_batches_of_different_sample_shapes_are_refused():
    batches = [torch.randn(20, 6), torch.randn(20, 6), torch.randn(20, 5)]
    message = "Batch 3 of the calibration data holds samples of shape (5,), the earlier batches (6,): every batch must hold samples of one shape."
    with pytest.raises(ValueError, match=exactly(message)):
        infoprune.prune(small_mlp(), iter(batches), "l1", ratio=0.5, device="cpu")


def test_a_bare_inputs_labels_tuple_is_read_as_labelled_data():
    data = labelled()
    from_tuple = infoprune.prune(small_mlp(), (data.inputs, data.labels), "snip", ratio=0.5, device="cpu")
    from_labelled = infoprune.prune(small_mlp(), data, "snip", ratio=0.5, device="cpu")
    assert all(torch.equal(from_tuple.masks[k], from_labelled.masks[k]) for k in from_labelled.masks)


def test_an_endless_generator_is_capped_and_says_so(caplog):
    def endless():
        while True:
            yield torch.randn(500, 6), torch.randint(0, 3, (500,))

    caplog.set_level(logging.INFO, logger="infoprune")
    result = infoprune.prune(small_mlp(), endless(), "snip", ratio=0.5, device="cpu")
    assert result.params_after < result.params_before
    assert "calibration data has no length: read its first 10000 samples; pass calibration_samples= to read another number" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_and_gpu_are_refused_before_any_work():
    message = f"Device 'cuda' was asked for, but CUDA is not available here (torch {torch.__version__}); use device 'cpu', or leave it unset to use CUDA when present."
    with pytest.raises(ValueError, match=exactly(message)):
        infoprune.prune(small_mlp(), labelled(), "l1", ratio=0.5, device="cuda")
    with pytest.raises(ValueError, match=exactly("Unknown device 'gpu': use 'cpu', 'cuda' (or 'cuda:N') or 'mps', or leave it unset to use CUDA when present.")):
        infoprune.prune(small_mlp(), labelled(), "l1", ratio=0.5, device="gpu")


def test_sweep_validator_catches_device_and_missing_recipes_before_any_run(monkeypatch):
    raw = sweep_raw()
    raw["training"]["device"] = "gpu"
    with pytest.raises(ConfigError, match=exactly("config [training]: Unknown device 'gpu': use 'cpu', 'cuda' (or 'cuda:N') or 'mps', or leave it unset to use CUDA when present.")):
        parse_config(raw)
    monkeypatch.setitem(DATASETS, "my-data", DATASETS["tensor-file"])
    raw = sweep_raw(datasets=["my-data"])
    raw["training"]["train_epochs"] = 2
    message = "config [training]: No training recipe for data set 'my-data' (recipes: cifar10, cifar10-retrain, cifar100, cifar100-retrain, imagenet, imagenet-retrain, mnist, mnist-retrain, tensor-file, tensor-file-retrain); add one to infoprune.training.RECIPES, or set the training epochs to 0."
    with pytest.raises(ConfigError, match=exactly(message)):
        parse_config(raw)
    raw["grid"]["datasets"] = ["tensor-file"]
    assert parse_config(raw).training.train_epochs == 2  # user data has a default recipe


def test_cli_out_that_is_a_file_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "run", lambda config: pytest.fail("the run started"))
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    assert cli.main(["prune", "--out", str(existing), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"infoprune: error: --out {existing} is (or lies inside) an existing file, not a folder; pass a folder.\n"
    assert existing.read_text() == "keep me"


def test_cli_sweep_out_that_is_a_file_is_refused(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text('[grid]\nmodels = ["lenet5"]\ndatasets = ["mnist"]\n[[methods]]\nname = "l1"\nparams = { ratio = 0.5 }\n')
    existing = tmp_path / "taken"
    existing.write_text("")
    assert cli.main(["sweep", str(config), "--out", str(existing / "sub")]) == 2
    assert capsys.readouterr().err == f"infoprune: error: --out {existing / 'sub'} is (or lies inside) an existing file, not a folder; pass a folder.\n"


def test_corrupt_results_file_gets_a_clear_error(tmp_path, capsys):
    (tmp_path / "results.sqlite").write_bytes(os.urandom(4096))
    message = f"{tmp_path / 'results.sqlite'} is not a readable results database (sqlite3: file is not a database). Move it aside to start the sweep afresh, or restore it from a copy."
    with pytest.raises(ResultsError, match=exactly(message)):
        ResultStore(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"infoprune: error: {message}\n"


def test_ctrl_c_during_prune_prints_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(config, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run", interrupted)
    assert cli.main(["prune", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 130
    captured = capsys.readouterr()
    out = tmp_path / "out"
    assert captured.out == f"interrupted: no result written to {out}; finished training epochs are kept in {out / 'cache'} and finished MIPP layers in {out / 'mipp-state.pt'}, run the same command to go on\n"
    assert captured.err == ""


def test_cli_prunes_user_tensor_data_with_the_default_epochs(tmp_path, capsys):
    """--data tensor-file with the CLI's default --train-epochs (3) used to fail: no recipe."""
    write_tensor_file(tmp_path / "data.pt", n=120)
    out = tmp_path / "out"
    code = cli.main(["prune", "--data", "tensor-file", "--data-dir", str(tmp_path / "data.pt"), "--method", "l1",
                     "--ratio", "0.5", "--retrain-epochs", "1", "--calibration-samples", "50", "--device", "cpu",
                     "--allow-collapse", "--out", str(out)])  # fmt: skip (global l1 at 0.5 empties this LeNet)
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["train_epochs"] == 3 and summary["config"]["pretrained"]
    assert [p.name.endswith("-3ep-lr0.01-seed0.pt") for p in (out / "cache").iterdir()] == [True]  # trained 3 epochs
    loaded = load_pruned(out / "pruned_model.pt", build_model("lenet5"), torch.zeros(2, 1, 28, 28))
    assert loaded.fc1.out_features == summary["pruning"]["layers"]["fc1"]["kept"] < 120


def test_cli_device_gpu_is_refused_before_any_work(tmp_path, capsys):
    assert cli.main(["prune", "--out", str(tmp_path), "--device", "gpu", "--train-epochs", "0"]) == 2
    message = "Unknown device 'gpu': use 'cpu', 'cuda' (or 'cuda:N') or 'mps', or leave it unset to use CUDA when present."
    assert capsys.readouterr().err == f"infoprune: error: {message}\n"
