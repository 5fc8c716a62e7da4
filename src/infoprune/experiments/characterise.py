"""``infoprune characterise RUN_DIR [RUN_DIR ...]``: MINT §IV-E for runs of ``infoprune prune``.

Each run directory holds ``summary.json`` and ``pruned_model.pt``. The original network is
rebuilt the way the run built it (from the trained-model cache, or ``--weights``), the pruned
one from its masks and weights; both are characterised on a seeded subset of the test split
with :func:`infoprune.characterisation.characterise`. Several runs of one base model (e.g.
MIPP and baselines at the same FLOPs) are compared side by side: a table in
``characterisation.md``, the numbers in ``characterisation.json``, reliability diagrams
(MINT Fig. 8), accuracy under attack against ε (Fig. 6) and Grad-CAM maps of the last conv
layer (Fig. 7), original in the first row.

Attacks act on [0, 1] pixels: inputs are un-normalised with the data set's statistics
(:data:`infoprune.data.NORMALISATION`); a ``tensor-file`` data set's inputs are attacked on
their own scale, clipped to [0, 1] (the user's tensors are assumed to be pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from infoprune.characterisation import ATTACKS, SAMPLES, PixelScale, characterise, grad_cam, pixel_scale
from infoprune.data import DatasetSplits, LabelledTensors, load_dataset
from infoprune.experiments.pipeline import RunConfig, base_model, read_summary, training_split
from infoprune.experiments.record import RunRecord, SweepRecord
from infoprune.io import atomic_write_bytes, atomic_write_json, load_pruned
from infoprune.plots import plt
from infoprune.progress import progress_bar

GRADCAM_IMAGES = 6
ATTACK_NAMES = {"ifgsm": "I-FGSM", "ill": "iterative least-likely"}
TABLE_EPSILONS = (2 / 255, 8 / 255, 32 / 255)  # the ε columns of the tables


@dataclass
class LoadedRun:
    """A run directory's record and its two networks (original and pruned, re-trained)."""

    directory: Path
    record: RunRecord
    data: DatasetSplits
    original: nn.Module
    pruned: nn.Module

    @property
    def label(self) -> str:
        method = self.record.config["method"]
        return method if self.directory.name == method else f"{method} ({self.directory.name})"


def load_run(directory: str | Path, data: DatasetSplits | None = None, device: str = "cpu") -> LoadedRun:
    """Rebuild a run's original and pruned networks (the original from the run's cache)."""
    directory = Path(directory)
    missing = [f for f in ("summary.json", "pruned_model.pt") if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a run directory of `infoprune prune`: it lacks {', '.join(missing)}.")
    record = read_summary(directory / "summary.json")
    known = {f.name for f in fields(RunConfig)}
    config = RunConfig(**{k: v for k, v in record.config.items() if k in known})
    config = replace(config, device=device)
    data = data or load_dataset(config.dataset, config.data_dir, seed=config.seed)
    data_used = replace(data, train=training_split(config, data))
    original = base_model(config, data_used, torch.device(device)).eval()
    skeleton = base_model(replace(config, pretrained=False, weights=None), data_used, torch.device(device))
    pruned = load_pruned(directory / "pruned_model.pt", skeleton, data.test.inputs[:2])
    return LoadedRun(directory, record, data, original, pruned.to(device))


def _same_base(runs: list[LoadedRun]) -> None:
    keys = ("model", "dataset", "data_dir", "seed", "train_epochs", "train_samples", "pretrained", "weights")
    first = {k: runs[0].record.config.get(k) for k in keys}
    for run in runs[1:]:
        other = {k: run.record.config.get(k) for k in keys}
        if other != first:
            differ = sorted(k for k in keys if other[k] != first[k])
            raise ValueError(
                f"{run.directory} was pruned from another base network than {runs[0].directory} (they differ in "
                f"{', '.join(differ)}); characterise compares runs of one original network."
            )


def characterise_runs(directories: list[str | Path], out: str | Path | None = None, samples: int = SAMPLES,
                      gradcam_images: int = GRADCAM_IMAGES, device: str = "cpu") -> Path:  # fmt: skip
    """Characterise the original and every run's pruned network; returns the Markdown file."""
    if not directories:
        raise ValueError("Give at least one run directory.")
    first = load_run(directories[0], device=device)
    runs = [first] + [load_run(d, first.data, device) for d in directories[1:]]
    _same_base(runs)
    out = Path(out) if out is not None else first.directory / "characterisation"
    out.mkdir(parents=True, exist_ok=True)
    test = first.data.test.subset(samples, seed=0)
    scale = pixel_scale(first.data.name)
    models = {"original": first.original} | {run.label: run.pruned for run in runs}
    results = {}
    with progress_bar(total=len(models), desc="characterise", unit="network") as bar:
        for name, model in models.items():
            bar.set_postfix_str(name)
            results[name] = characterise(model, test.inputs, test.labels, scale)
            bar.update(1)
    for name, run in zip(list(models)[1:], runs):
        results[name]["run"] = {"directory": str(run.directory), "method": run.record.config["method"],
                                "pruning": _pruning_summary(run.record)}  # fmt: skip
    atomic_write_json(out / "characterisation.json", results)
    reliability_figure({n: r["calibration"] for n, r in results.items()}, out / "reliability.png")
    adversarial_figure({n: r["adversarial"] for n, r in results.items()}, out / "adversarial.png")
    gradcam_figure(models, test.subset(gradcam_images, seed=1), scale, out / "gradcam.png")
    lines = [
        f"# Characterisation (MINT §IV-E): {first.record.config['model']} on {first.data.name}",
        "",
        f"{len(test)} test images; ε on the [0, 1] pixel scale (ℓ∞), step 1/255, Kurakin et al.'s iteration count.",
        "",
        *characterisation_table(results),
        "",
        "![Reliability diagrams (MINT Fig. 8)](reliability.png)",
        "",
        "![Accuracy under attack (MINT Fig. 6)](adversarial.png)",
        "",
        "![Grad-CAM of the last conv layer, true class (MINT Fig. 7)](gradcam.png)",
        "",
    ]
    path = out / "characterisation.md"
    atomic_write_bytes(path, lambda f: f.write("\n".join(lines).encode()))
    return path


def _pruning_summary(record: RunRecord) -> dict[str, float]:
    return {
        "units_removed": record.units_removed_fraction,
        "flops_kept": record.kept_fraction("flops"),
        "params_kept": record.kept_fraction("params"),
    }


def _eps_key(epsilon: float) -> str:
    return f"{epsilon:.6g}"


def characterisation_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: per model, FLOPs kept, accuracy, ECE and accuracy under both attacks."""
    eps_columns = [f"{ATTACK_NAMES[a]} ε={round(255 * e)}/255" for a in ATTACKS for e in TABLE_EPSILONS]
    rows = [
        "| model | units removed (%) | FLOPs kept (%) | test acc. (%) | ECE (%) | " + " | ".join(eps_columns) + " |",
        "|" + "---|" * (5 + len(eps_columns)),
    ]
    for name, result in results.items():
        pruning = result.get("run", {}).get("pruning")
        removed = f"{100 * pruning['units_removed']:.1f}" if pruning else "0"
        flops = f"{100 * pruning['flops_kept']:.1f}" if pruning else "100"
        attacked = [f"{100 * result['adversarial'][a][_eps_key(e)]:.1f}" for a in ATTACKS for e in TABLE_EPSILONS]
        rows.append(
            f"| {name} | {removed} | {flops} | {100 * result['accuracy']:.2f} | "
            f"{100 * result['calibration']['ece']:.2f} | " + " | ".join(attacked) + " |"
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Figures


def reliability_figure(calibrations: dict[str, dict[str, Any]], path: Path) -> Path:
    """One reliability diagram per model: accuracy per confidence bin, the diagonal in red."""
    fig, axes = plt.subplots(1, len(calibrations), figsize=(3.2 * len(calibrations), 3.4), squeeze=False)
    for ax, (name, cal) in zip(axes[0], calibrations.items()):
        edges = np.asarray(cal["bin_edges"])
        accuracy = np.nan_to_num(np.asarray(cal["accuracy"], dtype=float))
        ax.bar(edges[:-1], accuracy, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="white")
        ax.plot([0, 1], [0, 1], color="red", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{name}\nECE {100 * cal['ece']:.2f} %")
        ax.title.set_fontsize(8)
    axes[0][0].set_ylabel("accuracy")
    return _save(fig, path)


def adversarial_figure(adversarial: dict[str, dict[str, dict[str, float]]], path: Path) -> Path:
    """Accuracy against ε (×255) per attack, one line per model."""
    fig, axes = plt.subplots(1, len(ATTACKS), figsize=(5 * len(ATTACKS), 3.6), squeeze=False)
    for ax, attack in zip(axes[0], ATTACKS):
        for name, per_attack in adversarial.items():
            eps = sorted(per_attack[attack], key=float)
            ax.plot([255 * float(e) for e in eps], [100 * per_attack[attack][e] for e in eps], marker="o",
                    markersize=3, label=name)  # fmt: skip
        ax.set(xscale="symlog", xlabel="ε × 255 (ℓ∞, pixels in [0, 255])", ylabel="accuracy (%)", title=ATTACK_NAMES[attack])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def gradcam_figure(models: dict[str, nn.Module], images: LabelledTensors, scale: PixelScale, path: Path) -> Path:
    """Rows: models; columns: images; each the image in grey with its Grad-CAM map over it."""
    pixels = scale.to_pixels(images.inputs).clamp(0, 1)
    fig, axes = plt.subplots(len(models), len(images), figsize=(1.6 * len(images), 1.7 * len(models)), squeeze=False)
    for row, (name, model) in zip(axes, models.items()):
        maps = grad_cam(model, images.inputs, classes=images.labels)
        for ax, image, cam in zip(row, pixels, maps):
            ax.imshow(image.mean(0), cmap="gray", vmin=0, vmax=1)
            ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# In a sweep report (runs recorded with ``characterise = true``)

SWEEP_EPSILON = 8 / 255  # the ε of the sweep report's adversarial columns and figure


def _sweep_values(record: SweepRecord, which: str) -> tuple[float, float, float]:
    """(ECE, I-FGSM accuracy, I-LL accuracy at :data:`SWEEP_EPSILON`) of one run's model, in %."""
    result = record.characterisation[which]
    key = _eps_key(SWEEP_EPSILON)
    return 100 * result["calibration"]["ece"], 100 * result["adversarial"]["ifgsm"][key], 100 * result["adversarial"]["ill"][key]


def sweep_characterisation_table(records: list[SweepRecord]) -> list[str]:
    """Markdown rows: per (state, method, level), ECE and accuracy under attack, original →
    re-trained, mean over seeds (only runs that recorded a characterisation)."""
    eps = f"{round(255 * SWEEP_EPSILON)}/255"
    rows = [
        f"| state | method | level | units removed (%) | ECE (%) | I-FGSM acc. ε={eps} (%) | I-LL acc. ε={eps} (%) |",
        "|" + "---|" * 7,
    ]
    groups: dict[tuple, list[SweepRecord]] = {}
    for r in records:
        if r.characterisation is not None:
            groups.setdefault((r.state, r.label, r.level.index), []).append(r)
    for (state, label, index), runs in groups.items():
        original = np.mean([_sweep_values(r, "original") for r in runs], axis=0)
        retrained = np.mean([_sweep_values(r, "retrained") for r in runs], axis=0)
        removed = 100 * np.mean([r.units_removed_fraction for r in runs])
        cells = [f"{o:.1f} → {p:.1f}" for o, p in zip(original, retrained)]
        rows.append(f"| {state} | {label} | {index + 1} | {removed:.1f} | " + " | ".join(cells) + " |")
    return rows


def sweep_characterisation_figure(records: list[SweepRecord], path: Path, title: str) -> Path:
    """ECE and accuracy under I-FGSM (ε = 8/255) of the re-trained networks against units removed,
    one line per (method, state); the originals' values as dashed lines."""
    runs = [r for r in records if r.characterisation is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    series: dict[str, list[SweepRecord]] = {}
    for r in runs:
        series.setdefault(f"{r.label} ({r.state})", []).append(r)
    for name, members in series.items():
        members = sorted(members, key=lambda r: r.units_removed_fraction)
        xs = [100 * r.units_removed_fraction for r in members]
        values = np.array([_sweep_values(r, "retrained") for r in members])
        for ax, column in zip(axes, (0, 1)):
            ax.plot(xs, values[:, column], marker="o", markersize=3, label=name)
    for state in sorted({r.state for r in runs}):
        original = np.mean([_sweep_values(r, "original") for r in runs if r.state == state], axis=0)
        for ax, column in zip(axes, (0, 1)):
            ax.axhline(original[column], linestyle="--", linewidth=1, color="grey")
    axes[0].set(xlabel="units removed (%)", ylabel="ECE (%)", title=f"{title}: calibration (dashed: original)")
    axes[1].set(xlabel="units removed (%)", ylabel="accuracy (%)", title=f"I-FGSM, ε = {round(255 * SWEEP_EPSILON)}/255")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    return _save(fig, path)
