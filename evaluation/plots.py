"""PNG plots of an evaluation: PR curves, FROC, root-count and tooth-number confusion;
and a figure as base64 PNG for the HTML reports."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen on servers and in CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from evaluation.detection_metrics import confusion_matrix
from models.teeth import PERMANENT_FDI


def figure_png_base64(fig: Figure) -> str:
    """The figure as a base64 PNG (for ``<img src="data:image/png;base64,...">``), closed after."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pr_figure(curves: dict[str, Any]) -> Figure | None:
    pr = {k.removeprefix("pr_"): v for k, v in curves.items() if k.startswith("pr_")}
    if not pr:
        return None
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (recall, precision) in pr.items():
        ax.plot(recall, precision, label=name)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall at IoU 0.5", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def froc_figure(curves: dict[str, Any]) -> Figure | None:
    data = curves.get("froc")
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in data.items():
        rates = [float(r) for r in values]
        sens = [np.nan if v is None else v for v in values.values()]
        ax.plot(rates, sens, marker="o", label=name)
    ax.set(xscale="log", xlabel="false positives per image", ylabel="sensitivity", title="FROC", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def matrix_figure(matrix: np.ndarray, labels: list[str], title: str) -> Figure:
    size = max(4.0, 0.28 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(labels) <= 6:
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def figures(report: dict[str, Any]) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    curves = report.get("_curves", {})
    for name, fig in (("pr_curves.png", pr_figure(curves)), ("froc.png", froc_figure(curves))):
        if fig is not None:
            out[name] = fig
    roots = report.get("root_count")
    if roots and roots["teeth"]:
        cm = np.asarray(roots["confusion_matrix"]["rows_true_cols_predicted"])
        out["root_count_confusion.png"] = matrix_figure(cm, ["1", "2", "3+"], "Root count")
    pairs = report.get("teeth", {}).get("fdi_pairs")
    if pairs:
        fdi = list(PERMANENT_FDI)
        cm = confusion_matrix([p[0] for p in pairs], [p[1] for p in pairs], fdi)
        out["tooth_number_confusion.png"] = matrix_figure(cm, [str(f) for f in fdi], "Tooth numbers (matched teeth)")
    return out


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    written = []
    for name, fig in figures(report).items():
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
