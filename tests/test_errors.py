"""Bad input gets a clear error that names the problem."""

import pytest
import torch
from torch import nn

import infoprune
from infoprune.models import build_model

from records import stand_in_record, stand_in_sweep_record

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
    return result, stand_in_record()


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
            store.put(planned.run_id, OK, stand_in_sweep_record(run_id=planned.run_id))
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
    argv = ["prune", "--data", "tensor-file", "--data-dir", str(tmp_path / "data.pt"), "--method", "l1", "--ratio", "0.5",
            "--retrain-epochs", "1", "--calibration-samples", "50", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 2  # global l1 at 0.5 empties this LeNet: refused unless asked for (issue 27)
    refusal = "infoprune: error: Method 'l1' at ratio=0.5 collapses the network: layer(s) ['conv1', 'conv2', 'fc2'] lost every unit; no path from the input to the output survives, so the pruned model outputs a constant. Ask for a smaller budget, pass min_units=1 where the method takes it, or pass allow_collapse=True (CLI: --allow-collapse) to get the collapsed result anyway.\n"
    assert capsys.readouterr().err.endswith(refusal) and not (out / "summary.json").exists()
    code = cli.main([*argv, "--allow-collapse"])  # the trained base model is reused from OUT/cache
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "WARNING: the pruned network collapsed: no input-output path survives (the model outputs a constant); layers that lost every unit: ['conv1', 'conv2', 'fc2']" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["train_epochs"] == 3 and summary["config"]["pretrained"]
    assert [p.name.endswith("-3ep-lr0.01-seed0.pt") for p in (out / "cache").iterdir()] == [True]  # trained 3 epochs
    loaded = load_pruned(out / "pruned_model.pt", build_model("lenet5"), torch.zeros(2, 1, 28, 28))
    assert loaded.fc1.out_features == summary["pruning"]["layers"]["fc1"]["kept"] < 120


def test_cli_device_gpu_is_refused_before_any_work(tmp_path, capsys):
    assert cli.main(["prune", "--out", str(tmp_path), "--device", "gpu", "--train-epochs", "0"]) == 2
    message = "Unknown device 'gpu': use 'cpu', 'cuda' (or 'cuda:N') or 'mps', or leave it unset to use CUDA when present."
    assert capsys.readouterr().err == f"infoprune: error: {message}\n"


# ---------------------------------------------------------------------------------------------
# Issue 27: the models and files users have. No side effects on the caller, one validation path,
# collapse never silent, named errors for files and layers infoprune cannot shrink.

from torch.nn.utils import parametrizations

from infoprune.data.base import CALIBRATION_CAP, calibration_tensors
from infoprune.io import PROBE_SEED, exclusive_folder, export_onnx  # noqa: F401
from infoprune.network import Network
from infoprune.training import train


def rng_states() -> list[torch.Tensor]:
    return [torch.get_rng_state(), *(torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])]


def test_prune_and_load_pruned_leave_the_global_rng_as_it_was(tmp_path):
    model, unpruned, data = small_mlp(), small_mlp(), labelled()
    path, _ = saved_pruned(tmp_path, model, data)
    calls = {
        "prune": lambda: infoprune.prune(model, data, "random", ratio=0.5, device="cpu", seed=7),
        "load_pruned": lambda: load_pruned(path, unpruned, torch.zeros(2, 6)),
    }
    for name, call in calls.items():
        torch.manual_seed(123)
        before = rng_states()
        call()
        assert all(torch.equal(a, b) for a, b in zip(before, rng_states())), f"{name} changed the global RNG"


def test_prune_and_load_pruned_leave_the_callers_model_as_it_was(tmp_path):
    model = small_mlp().train()
    model[0].weight.requires_grad_(False)
    model(torch.randn(4, 6)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    handle = model.register_forward_hook(lambda module, args, output: None)
    hooks = dict(model._forward_hooks)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def unchanged() -> None:
        assert all(m.training for m in model.modules()) and dict(model._forward_hooks) == hooks
        assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
        assert {n: p.grad for n, p in model.named_parameters() if p.grad is not None}.keys() == grads.keys()
        assert all(torch.equal(model.get_parameter(n).grad, g) for n, g in grads.items())
        assert all(torch.equal(v, state[k]) and v.dtype == torch.float32 and v.device.type == "cpu"
                   for k, v in model.state_dict().items())  # fmt: skip

    result = infoprune.prune(model, labelled(), "l1", ratio=0.5, device="cpu")
    unchanged()
    save_pruned(tmp_path / "p.pt", result.model, result.masks, None, torch.zeros(2, 6))
    load_pruned(tmp_path / "p.pt", model, torch.zeros(2, 6))  # used to switch the caller's model to eval mode
    unchanged()
    handle.remove()


@pytest.mark.parametrize("seed", [1.5, True, -1, "0"])
def test_seed_must_be_a_non_negative_integer(seed):
    with pytest.raises(ValueError, match=exactly(f"seed must be an integer ≥ 0, got {seed!r}.")):
        infoprune.prune(small_mlp(), labelled(), "l1", ratio=0.5, seed=seed)


def test_a_single_string_for_ignore_is_one_layer_name():
    """ignore="10" used to be read as '1' and '0': layer 0 left whole, layer 10 pruned."""
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(8, 8), nn.ReLU())], nn.Linear(8, 3))
    result = infoprune.prune(model, torch.randn(60, 8), "l1", ratio=0.5, scope="layer", device="cpu", ignore="10")
    assert "10" not in result.masks and result.layers["0"].kept == 4
    as_module = infoprune.prune(model, torch.randn(60, 8), "l1", ratio=0.5, scope="layer", device="cpu", ignore=model[10])
    assert "10" not in as_module.masks and "0" in as_module.masks  # a module instance, as Torch-Pruning takes
    with pytest.raises(TypeError, match=exactly("ignore= must be a layer name, a module, a module type or a list of them, got int 10.")):
        infoprune.prune(model, torch.randn(60, 8), "l1", ratio=0.5, ignore=10)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
@pytest.mark.parametrize("method", ["tp-taylor", "sosp", "tp-hessian", "snip"])
def test_integer_labels_of_any_dtype_give_the_int64_result(method, dtype):
    data = labelled()
    expected = infoprune.prune(small_mlp(), data, method, ratio=0.5, device="cpu").masks
    narrow = LabelledTensors(data.inputs, data.labels.to(dtype))
    actual = infoprune.prune(small_mlp(), narrow, method, ratio=0.5, device="cpu").masks
    assert all(torch.equal(actual[name], mask) for name, mask in expected.items())


class Normalising(nn.Module):
    """A CNN that normalises its input with float64 constants; ``cast`` converts to float32 itself."""

    def __init__(self, cast: bool) -> None:
        super().__init__()
        self.cast = cast
        self.register_buffer("mean", torch.tensor([127.5], dtype=torch.float64))
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 127.5
        return self.body(x.float() if self.cast else x)


def test_uint8_images_are_refused_with_the_conversion_or_pruned_when_the_model_converts():
    images = torch.randint(0, 256, (60, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    start = "The model rejects calibration inputs of shape (1, 8, 8) (per sample): RuntimeError: "
    end = (". The inputs are torch.uint8: pass them shaped and typed as the model expects (images stored as "
           "integers: convert them as in training, e.g. x.float() / 255).")  # fmt: skip
    with pytest.raises(ValueError, match=f"^{re.escape(start)}.*{re.escape(end)}$"):
        infoprune.prune(Normalising(cast=False), images, "l1", ratio=0.5, device="cpu")
    torch.manual_seed(0)
    model = Normalising(cast=True)
    result = infoprune.prune(model, images, "l1", ratio=0.5, device="cpu")  # its float64 step used to crash the check
    with torch.no_grad(), Network(model, images[:2]).masked(result.masks):
        masked = model(images)
    torch.testing.assert_close(result.model(images), masked)


def test_a_string_learning_rate_for_mipp_is_refused():
    message = "learning_rate must be a positive number, got '0.01' (str); pass e.g. learning_rate=1e-3."
    with pytest.raises(ValueError, match=exactly(message)):
        infoprune.prune(small_mlp(), labelled(), "mipp", learning_rate="0.01")


class Endless(torch.utils.data.IterableDataset):
    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        while True:
            yield torch.randn(6, generator=generator), 0


def test_an_endless_iterable_dataset_behind_a_dataloader_is_capped(caplog):
    loader = torch.utils.data.DataLoader(Endless(), batch_size=1000)  # has __len__, which raises
    with caplog.at_level(logging.INFO, logger="infoprune"):
        inputs, labels = calibration_tensors(loader)
    assert inputs.shape == (CALIBRATION_CAP, 6) and labels.shape == (CALIBRATION_CAP,)
    assert "calibration data has no length: read its first 10000 samples; pass calibration_samples=" in caplog.text


class Tokens(nn.Module):
    """Token ids → embedding → mean → two hidden layers → logits over the vocabulary (optionally
    tied to the embedding, as language models do)."""

    def __init__(self, tie: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.fc1, self.fc2, self.head = nn.Embedding(20, 8), nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 20)
        if tie:
            self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc2(torch.relu(self.fc1(self.emb(tokens).mean(1)))))


TOKENS = torch.randint(0, 20, (60, 5), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["l1", "mipp"])
def test_token_id_models_prune_and_their_connectivity_is_checked(method):
    """The final connectivity check fed float ones into the embedding (after all the work)."""
    model = Tokens()
    options = {"ratio": 0.5} if method == "l1" else {**TINY, "repeats": 2}
    result = infoprune.prune(model, TOKENS, method, device="cpu", **options)
    assert not result.collapsed and result.params_after < result.params_before
    network = Network(model, TOKENS[:2])
    assert network.is_disconnected({"fc1": torch.zeros(16, dtype=torch.bool)})
    assert not network.is_disconnected({"fc1": torch.arange(16) == 3})
    with torch.no_grad(), network.masked(result.masks):
        masked = model(TOKENS)
    torch.testing.assert_close(result.model(TOKENS), masked)


def test_tied_weights_are_left_whole_and_stay_tied(caplog):
    model = Tokens(tie=True)
    with caplog.at_level(logging.INFO, logger="infoprune"):
        result = infoprune.prune(model, TOKENS, "l1", ratio=0.5, device="cpu")
    assert "Group 'fc2' is left whole: its parameter 'head.weight' is tied to ['emb.weight'] (shared weights); untie them (e.g. assign a cloned nn.Parameter) to prune this group." in caplog.text
    assert list(result.masks) == ["fc1"] and result.model.head.weight is result.model.emb.weight
    with torch.no_grad(), Network(model, TOKENS[:2]).masked(result.masks):
        masked = model(TOKENS)
    torch.testing.assert_close(result.model(TOKENS), masked)


def test_select_inputs_on_token_ids_is_refused():
    message = ("select_inputs=True selects input features, but the calibration inputs are torch.int64 (e.g. token ids), "
               "which cannot be masked; leave select_inputs off for integer inputs.")  # fmt: skip
    with pytest.raises(ValueError, match=exactly(message)):
        infoprune.prune(Tokens(), TOKENS, "mipp", select_inputs=True, device="cpu", **TINY)


def test_a_dataparallel_model_is_pruned_through_its_module():
    data = labelled()
    expected = infoprune.prune(small_mlp(), data, "l1", ratio=0.5, device="cpu")
    result = infoprune.prune(nn.DataParallel(small_mlp()), data, "l1", ratio=0.5, device="cpu")
    assert isinstance(result.model, nn.Sequential) and torch.equal(result.masks["0"], expected.masks["0"])
    torch.testing.assert_close(result.model(data.inputs), expected.model(data.inputs))


def _legacy_weight_norm(module: nn.Module) -> None:
    with pytest.warns(FutureWarning):
        torch.nn.utils.weight_norm(module)


@pytest.mark.parametrize(
    ("wrap", "message"),
    [
        (parametrizations.weight_norm, "layer '0' has parametrized tensors ['weight'] (torch.nn.utils.parametrize, e.g. weight_norm or spectral_norm), which infoprune cannot shrink consistently. Remove them first: torch.nn.utils.parametrize.remove_parametrizations(model.get_submodule('0'), 'weight') (this keeps the current weights)."),
        (parametrizations.spectral_norm, "layer '0' has parametrized tensors ['weight'] (torch.nn.utils.parametrize, e.g. weight_norm or spectral_norm), which infoprune cannot shrink consistently. Remove them first: torch.nn.utils.parametrize.remove_parametrizations(model.get_submodule('0'), 'weight') (this keeps the current weights)."),
        (_legacy_weight_norm, "layer '0' computes its weights in a hook (WeightNorm), which infoprune cannot shrink consistently. Make the weights plain parameters first: torch.nn.utils.remove_weight_norm(model.get_submodule('0')) (this keeps the current weights)."),
        (lambda m: torch.nn.utils.prune.l1_unstructured(m, "weight", 0.3), "layer '0' computes its weights in a hook (L1Unstructured), which infoprune cannot shrink consistently. Make the weights plain parameters first: torch.nn.utils.prune.remove(model.get_submodule('0'), 'weight') (this keeps the current weights)."),
    ],
    ids=["weight_norm", "spectral_norm", "legacy weight_norm", "torch prune mask"],
)
def test_layers_with_computed_weights_are_refused_with_the_fix(wrap, message):
    model = small_mlp()
    wrap(model[0])
    with pytest.raises(ValueError, match=exactly(message)):
        infoprune.prune(model, labelled(), "l1", ratio=0.5, device="cpu")


def test_a_second_prune_into_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with exclusive_folder(out, cli.PRUNE_LOCK, "infoprune prune"):  # a first run holds the folder
        assert cli.main(["prune", "--out", str(out), "--device", "cpu", "--train-epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"infoprune: error: Another `infoprune prune` \(pid \d+ on .+\) is writing to {re.escape(str(out))}; "
                        r"wait for it to end or pass another folder\.\n", err), err  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [cli.PRUNE_LOCK]


def test_a_data_dir_that_does_not_exist_is_refused(tmp_path, capsys):
    missing = tmp_path / "nonexistent" / "x"
    assert cli.main(["prune", "--data", "mnist", "--data-dir", str(missing), "--out", str(tmp_path / "out")]) == 2
    message = f"The data directory {missing} does not exist; pass the folder (or file) holding the 'mnist' data, or leave --data-dir out to use the default location."
    assert capsys.readouterr().err == f"infoprune: error: {message}\n"


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pipeline, "run", lambda *a, **k: pytest.fail("the run started"))
    monkeypatch.setattr("infoprune.io.tempfile.TemporaryFile", denied)  # as a read-only folder answers (root ignores chmod)
    out = tmp_path / "out"
    assert cli.main(["prune", "--out", str(out), "--device", "cpu"]) == 2
    message = f"--out {out} is not writable (Permission denied); pass a folder you can write to."
    assert capsys.readouterr().err == f"infoprune: error: {message}\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: pytest.fail("the run started"))
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert cli.main(["prune", "--out", str(out), "--device", "cpu"]) == 2
    finally:
        out.chmod(0o700)
    message = f"--out {out} is not writable (Permission denied); pass a folder you can write to."
    assert capsys.readouterr().err == f"infoprune: error: {message}\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"config": {"model": "lenet5"}, "input_sh', "is not valid JSON (Unterminated string starting at: line 1 column 33 (char 32); truncated?)"),
        ('{"config": {"model": "lenet5"}}', "lacks input_shape, num_classes, which export and characterise need"),
        ('{"input_shape": [1, 28, 28], "num_classes": 10}', "lacks config.model, which export and characterise need"),
        ('{"config": {"model": "lenet5"}, "input_shape": "28x28", "num_classes": 10}', "holds input_shape '28x28', not a list of positive sizes"),
    ],
    ids=["truncated", "no input_shape", "no model", "bad input_shape"],
)
def test_export_of_a_broken_summary_names_the_file_and_the_problem(tmp_path, capsys, text, problem):
    (tmp_path / "summary.json").write_text(text)
    (tmp_path / "pruned_model.pt").write_bytes(b"")
    assert cli.main(["export", str(tmp_path), "--onnx", str(tmp_path / "m.onnx")]) == 2
    message = f"{tmp_path / 'summary.json'} {problem}: re-run `infoprune prune` into that folder to write it again."
    assert capsys.readouterr().err == f"infoprune: error: {message}\n"


def test_characterise_of_a_truncated_summary_names_the_file(tmp_path, capsys):
    (tmp_path / "summary.json").write_text('{"config": {"mod')
    (tmp_path / "pruned_model.pt").write_bytes(b"")
    assert cli.main(["characterise", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"infoprune: error: {tmp_path / 'summary.json'} is not valid JSON (") and err.endswith(
        "; truncated?): re-run `infoprune prune` into that folder to write it again.\n")


def test_onnx_export_onto_a_folder_is_refused(tmp_path):
    message = f"The ONNX destination {tmp_path} is a folder; pass a file name such as {tmp_path / 'model.onnx'}."
    with pytest.raises(ValueError, match=exactly(message)):
        export_onnx(small_mlp(), torch.zeros(2, 6), tmp_path)


def test_load_pruned_with_an_example_of_the_wrong_shape_is_refused(tmp_path):
    path, _ = saved_pruned(tmp_path, small_mlp(), labelled())
    message = f"The example input has samples of shape (5,), but {path} was saved for samples of shape (6,); pass a batch such as torch.zeros(2, 6)."
    with pytest.raises(ValueError, match=exactly(message)):
        load_pruned(path, small_mlp(), torch.zeros(2, 5))
    save_pruned(tmp_path / "no-probe.pt", *(lambda r: (r.model, r.masks))(saved_pruned(tmp_path, small_mlp(), labelled())[1]))
    with pytest.raises(ValueError, match=r"^The given model rejects the example input of shape \(2, 5\): RuntimeError: .*Pass a batch of inputs \(N, \.\.\.\) shaped as the model expects\.$"):
        load_pruned(tmp_path / "no-probe.pt", small_mlp(), torch.zeros(2, 5))


def test_a_corrupt_cached_base_model_is_rebuilt_with_a_warning(tmp_path, caplog):
    write_tensor_file(tmp_path / "a.pt", n=40)
    config = RunConfig(dataset="tensor-file", data_dir=str(tmp_path / "a.pt"), train_epochs=1, device="cpu", cache_dir=str(tmp_path / "cache"))
    data = DATASETS["tensor-file"](str(tmp_path / "a.pt"))
    base_model(config, data, torch.device("cpu"))
    (cache,) = (tmp_path / "cache").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger="infoprune"):
        base_model(config, data, torch.device("cpu"))
    assert f"the cached base model {cache} cannot be used (RuntimeError): moved it to {cache}.corrupt and training it again" in caplog.text
    assert torch.load(cache, weights_only=True).keys() == base_model(config, data, torch.device("cpu")).state_dict().keys()


def test_a_corrupt_training_checkpoint_is_set_aside_and_training_starts_afresh(tmp_path, caplog):
    checkpoint = tmp_path / "run.ckpt"
    checkpoint.write_bytes(b"PK\x03\x04 not a zip")
    model, data = small_mlp(), labelled()
    with caplog.at_level(logging.WARNING, logger="infoprune"):
        losses = train(model, data, get_recipe("mnist-retrain", epochs=1, batch_size=20), device="cpu", checkpoint=checkpoint)
    assert f"the training checkpoint {checkpoint} cannot be read (RuntimeError): moved it to {checkpoint}.corrupt and training from the start" in caplog.text
    assert len(losses) == 1 and (tmp_path / "run.ckpt.corrupt").is_file()


def test_progress_takes_true_false_none_or_a_factory():
    from infoprune.api import progress_factory
    from infoprune.progress import progress_bar

    assert progress_factory(True) is progress_bar and progress_factory(False) is None and progress_factory(None) is None
    assert progress_factory(progress_bar) is progress_bar
    with pytest.raises(TypeError, match=r"progress must be True, False, None or a progress-bar factory .*got 'yes'"):
        progress_factory("yes")


def test_release_freed_memory_trims_the_glibc_heap_where_there_is_one():
    from infoprune.running import _malloc_trim, release_freed_memory

    release_freed_memory()  # never raises, with or without glibc
    import platform

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert _malloc_trim() is not None
