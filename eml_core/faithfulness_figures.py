"""Figures of the faithfulness evaluation, as PNG bytes (a flow writes them where it writes its tables).

* :func:`curves_figure`: deletion and insertion curves (rows: removal operators; columns: deletion,
  insertion), one line per map method and reference ordering: the mean similarity over pairs (a pair's
  value is the mean over its evaluated sides) with a 95% band of that mean (mean +- 1.96 standard errors
  over pairs). References are drawn dashed.
* :func:`sanity_figure`: Spearman and SSIM between each method's maps under the trained and the cascaded
  randomized model, against the depth of the cascade (layer names on the axis), with the summary's
  bootstrap intervals as bands.
"""

from __future__ import annotations

import io

import numpy as np

from eml_core.faithfulness import CURVES, REFERENCE_ORDERINGS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def curve_bands(curve_rows):
    """Per (removal, method, curve, fraction): mean similarity over pairs, its standard error and the pair count."""
    import pandas as pd

    data = pd.DataFrame(curve_rows)
    per_pair = data.groupby(["removal", "method", "curve", "fraction", "pair_id"])["similarity"].mean().reset_index()
    grouped = per_pair.groupby(["removal", "method", "curve", "fraction"])["similarity"]
    bands = grouped.agg(["mean", "std", "count"]).reset_index()
    bands["sem"] = (bands["std"] / np.sqrt(bands["count"])).fillna(0.0)
    return bands


def curves_figure(curve_rows, title: str = "Deletion and insertion on the similarity") -> bytes:
    """PNG: mean deletion / insertion curves with 95% bands, one panel per (removal, curve)."""
    plt = _pyplot()
    bands = curve_bands(curve_rows)
    removals = list(dict.fromkeys(bands["removal"]))
    methods = list(dict.fromkeys(bands["method"]))
    figure, axes = plt.subplots(len(removals), len(CURVES), figsize=(10, 3.2 * len(removals)), dpi=110,
                                squeeze=False, sharex=True)
    colours = plt.get_cmap("tab10")
    for r, removal in enumerate(removals):
        for c, curve in enumerate(CURVES):
            ax = axes[r][c]
            for m, method in enumerate(methods):
                line = bands[(bands["removal"] == removal) & (bands["method"] == method) & (bands["curve"] == curve)]
                if line.empty:
                    continue
                line = line.sort_values("fraction")
                style = "--" if method in REFERENCE_ORDERINGS else "-"
                ax.plot(line["fraction"], line["mean"], style, color=colours(m % 10), label=method, marker=".")
                ax.fill_between(line["fraction"], line["mean"] - 1.96 * line["sem"],
                                line["mean"] + 1.96 * line["sem"], color=colours(m % 10), alpha=0.15)
            ax.set_title(f"{curve} ({removal})")
            ax.set_ylabel("similarity")
            ax.grid(alpha=0.3)
            if r == len(removals) - 1:
                ax.set_xlabel("fraction of pixels " + ("removed" if curve == "deletion" else "restored"))
    axes[0][-1].legend(fontsize=7, loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    return _png(figure)


def sanity_figure(summary_rows, title: str = "Cascading model randomization") -> bytes:
    """PNG: Spearman and SSIM to the trained model's maps against the cascade depth, one line per method."""
    import pandas as pd

    plt = _pyplot()
    data = pd.DataFrame(summary_rows).sort_values(["method", "depth"])
    layers = data.drop_duplicates("depth").sort_values("depth")
    figure, axes = plt.subplots(1, 2, figsize=(max(8, 0.45 * len(layers) + 4), 4), dpi=110, squeeze=False)
    colours = plt.get_cmap("tab10")
    for c, measure in enumerate(("spearman", "ssim")):
        ax = axes[0][c]
        for m, (method, group) in enumerate(data.groupby("method", sort=False)):
            ax.plot(group["depth"], group[measure], marker="o", color=colours(m % 10), label=method)
            ax.fill_between(group["depth"], group[f"{measure}_low"], group[f"{measure}_high"], color=colours(m % 10),
                            alpha=0.15)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(layers["depth"], layers["layer"], rotation=70, fontsize=7)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("randomized down to (cumulative)")
        ax.set_ylabel(f"{'Spearman' if measure == 'spearman' else 'SSIM'} to the trained model's map")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return _png(figure)
