"""Plots of the evaluation report (matplotlib, Agg canvas; pyplot and the global backend are never touched, so
this is safe to call from any process)."""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Mapping, Optional, Tuple, Union

import numpy as np

from .ood import rank_safe_scores
from .rejection import RejectionCurves

__all__ = ["safe_filename", "plot_rejection_curves", "plot_ood_histograms"]


def safe_filename(text: str) -> str:
    """A file-name-safe version of a set/measure name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "x"


def _grid(n_panels: int, panel_size: Tuple[float, float] = (3.4, 2.8)):
    # fairseq's text_to_speech task sets the root logger to DEBUG at import: keep matplotlib's font search quiet
    mpl_logger = logging.getLogger("matplotlib")
    if mpl_logger.getEffectiveLevel() < logging.WARNING:
        mpl_logger.setLevel(logging.WARNING)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(4, max(1, n_panels))
    rows = int(math.ceil(n_panels / cols))
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def plot_rejection_curves(
    curves: Mapping[str, RejectionCurves],
    path: Union[str, Path],
    title: str = "",
    error_label: str = "error (%)",
) -> Path:
    """One panel per measure: mean error over all sentences vs fraction rejected, for rejection by the measure,
    random rejection and the oracle; PRR in the panel title. Writes a PNG and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = _grid(len(curves))
    for ax, (measure, c) in zip(axes, curves.items()):
        x = 100.0 * c.fraction
        ax.plot(x, c.random, color="0.55", lw=1.2, ls="--", label="random")
        ax.plot(x, c.oracle, color="tab:green", lw=1.2, label="oracle")
        ax.plot(x, c.uncertainty, color="tab:blue", lw=1.5, label="by measure")
        ax.fill_between(x, c.uncertainty, c.random, color="tab:blue", alpha=0.12, lw=0)
        prr = "n/a" if not np.isfinite(c.prr) else f"{c.prr:.1f}"
        ax.set_title(f"{measure}  PRR {prr}%", fontsize=9)
        ax.set_xlabel("rejected (%)", fontsize=8)
        ax.set_ylabel(error_label, fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if len(curves):
        axes[0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, format="png")
    return path


def plot_ood_histograms(
    id_values: Mapping[str, np.ndarray],
    ood_values: Mapping[str, np.ndarray],
    path: Union[str, Path],
    id_name: str = "ID",
    ood_name: str = "OOD",
    roc_aucs: Optional[Mapping[str, float]] = None,
    title: str = "",
    bins: int = 40,
) -> Path:
    """One panel per measure: density histograms of the (aggregated) measure on the ID and the OOD set, with
    shared bins over the central 99% of the values (the rest, and non-finite values, in the edge bins); ROC-AUC (%)
    in the panel title when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    measures = [m for m in id_values if m in ood_values]
    fig, axes = _grid(len(measures))
    for ax, measure in zip(axes, measures):
        a = np.asarray(id_values[measure], dtype=np.float64)
        b = np.asarray(ood_values[measure], dtype=np.float64)
        both, _ = rank_safe_scores(np.concatenate([a, b]))
        # bins over the central 99% so that a few outliers do not squash the rest; outliers go to the edge bins
        lo, hi = (float(v) for v in np.percentile(both, [0.5, 99.5]))
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        both = np.clip(both, lo, hi)
        a, b = both[: a.size], both[a.size:]
        # one polygon per histogram ("stepfilled"), far faster to draw than one rectangle per bin
        ax.hist(a, bins=edges, density=True, histtype="stepfilled", alpha=0.5, color="tab:blue",
                label=f"{id_name} (ID)")
        ax.hist(b, bins=edges, density=True, histtype="stepfilled", alpha=0.5, color="tab:red",
                label=f"{ood_name} (OOD)")
        t = measure
        if roc_aucs is not None and measure in roc_aucs and np.isfinite(roc_aucs[measure]):
            t += f"  ROC-AUC {roc_aucs[measure]:.1f}%"
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("value (nats)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if measures:
        axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, format="png")
    return path
