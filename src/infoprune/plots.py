"""Figures a person would put in a report (matplotlib, written to PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from infoprune.result import LayerSummary  # noqa: E402


def plot_layer_ratios(layers: dict[str, LayerSummary], path: str | Path, title: str) -> None:
    """Bar chart of each layer's pruning ratio, annotated with units kept / total (MIPP Fig. 4)."""
    names = list(layers)
    ratios = [100 * layers[n].pruning_ratio for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.5))
    bars = ax.bar(range(len(names)), ratios, color="#4c72b0")
    for bar, name in zip(bars, names):
        ax.annotate(
            f"{layers[name].kept}/{layers[name].total}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylim(0, 105)
    ax.set_ylabel("units removed (%)")
    ax.set_xlabel("layer")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
