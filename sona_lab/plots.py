"""The experiment plots (matplotlib `Figure` objects, no pyplot backend needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.search.space import trial_config
from sona_jax.serve.fusion import SOURCE_NAMES, fusion_weights


def _figure(**options):
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **options)


def draw_lambda_curve(ax, sweep: list[dict], label: str = "λ swept 0..1") -> None:
    """NDCG@10 against ILD@10 of a λ sweep on ``ax``, points labelled with their λ."""
    ild = [p["ild@10"] for p in sweep]
    ndcg = [p["ndcg@10"] for p in sweep]
    ax.plot(ild, ndcg, "-o", color="black", markersize=3, linewidth=1, label=label)
    for point in sweep:
        if abs(point["mmr_lambda"] * 10 - round(point["mmr_lambda"] * 10)) > 1e-6:
            continue  # label multiples of 0.1 only
        ax.annotate(
            f"{point['mmr_lambda']:g}",
            (point["ild@10"], point["ndcg@10"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )


def ndcg_vs_diversity_figure(records: list[dict], default_lambda: float, final: dict | None = None):
    """NDCG@10 vs intra-list diversity of every trial coloured by MMR λ; with ``final``, the
    best setting's λ sweep and the best and base settings marked."""
    fig = _figure(figsize=(7.5, 5))
    ax = fig.subplots()
    lam = [r["params"].get("diversity.mmr_lambda", default_lambda) for r in records]
    points = ax.scatter(
        [r["metrics"]["ild@10"] for r in records],
        [r["metrics"]["ndcg@10"] for r in records],
        c=lam,
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        s=28,
        label="trials",
    )
    fig.colorbar(points, ax=ax, label="MMR λ (1 = relevance only)")
    if final:
        draw_lambda_curve(ax, final["lambda_sweep"], "best setting, λ swept 0..1")
        for name, marker, colour in (("best", "*", "red"), ("default", "X", "tab:orange")):
            values = final[name]["validation"]
            ax.scatter(
                values["ild@10"],
                values["ndcg@10"],
                marker=marker,
                s=160,
                c=colour,
                edgecolors="black",
                zorder=3,
                label=f"{name} (validation)",
            )
    ax.set_xlabel("intra-list diversity ILD@10 (mean pairwise cosine distance)")
    ax.set_ylabel("NDCG@10 (validation)")
    ax.set_title("Relevance vs diversity across MMR λ")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return fig


def fusion_shares(records: list[dict], base: SonaConfig) -> np.ndarray:
    """(trials, sources) each trial's fusion weights as shares of their sum, SOURCE_NAMES order."""
    weights = np.array(
        [np.asarray(fusion_weights(trial_config(base, r["params"]))) for r in records]
    )
    return weights / weights.sum(1, keepdims=True)


def weight_effects(records: list[dict], base: SonaConfig) -> dict[str, dict[str, float]]:
    """Per fusion weight: OLS slope of the objective on its share, and Pearson r (NaN if the
    share never varies)."""
    shares = fusion_shares(records, base)
    y = np.array([r["objective"] for r in records])
    out = {}
    for s, name in enumerate(SOURCE_NAMES):
        x = shares[:, s]
        varies = len(records) > 1 and np.ptp(x) > 1e-9 and np.ptp(y) > 0
        slope = float(np.polyfit(x, y, 1)[0]) if varies else float("nan")
        r = float(np.corrcoef(x, y)[0, 1]) if varies else float("nan")
        out[name] = {"slope": slope, "r": r}
    return out


def weights_effect_figure(
    records: list[dict], base: SonaConfig, objective_name: str, protocol: str = "p1"
):
    """One panel per fusion weight: the objective against that weight's share of the total
    (weights are renormalised when serving), coloured by MMR λ (which moves the objective too),
    with a least-squares line (slope per unit share, Pearson r) and the best trial."""
    shares = fusion_shares(records, base)
    y = np.array([r["objective"] for r in records])
    lam = [r["params"].get("diversity.mmr_lambda", base.diversity.mmr_lambda) for r in records]
    effects = weight_effects(records, base)
    varies = len(set(lam)) > 1
    best = int(np.argmax(y))
    fig = _figure(figsize=(13.5, 6.5))
    axes = fig.subplots(2, 3, sharey=True)
    for ax in axes.ravel()[len(SOURCE_NAMES) :]:
        ax.set_visible(False)
    for s, (ax, name) in enumerate(zip(axes.ravel(), SOURCE_NAMES, strict=False)):
        x = shares[:, s]
        colour = {"c": lam, "cmap": "viridis", "vmin": 0.0, "vmax": 1.0} if varies else {}
        points = ax.scatter(x, y, s=24, **colour)
        ax.scatter(x[best], y[best], marker="*", s=160, c="red", edgecolors="black", zorder=3)
        effect = effects[name]
        if np.isfinite(effect["slope"]):
            line = np.linspace(x.min(), x.max(), 2)
            ax.plot(line, np.polyval(np.polyfit(x, y, 1), line), color="tab:red", linewidth=1)
        note = " (no request context under P2)" if name == "context" and protocol == "p2" else ""
        ax.set_title(
            f"{name}{note}: slope {effect['slope']:+.3f}, r {effect['r']:+.2f}", fontsize=9
        )
        ax.set_xlabel(f"{name} share of fusion weights (w / Σw)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{objective_name} (validation)")
    if varies:
        fig.colorbar(points, ax=axes, label="MMR λ", shrink=0.6)
    fixed = "" if varies else f", MMR λ = {lam[0]:g}"
    fig.suptitle(
        f"Effect of each fusion weight on the objective (★ best trial; red: OLS fit{fixed})"
    )
    return fig


def lambda_tradeoff_figure(sweep: list[dict]):
    """Two panels over MMR λ: NDCG@10 vs ILD@10 (the trade-off curve), and ILD@10 / coverage /
    NDCG@10 against λ."""
    fig = _figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    draw_lambda_curve(left, sweep)
    left.set_xlabel("intra-list diversity ILD@10")
    left.set_ylabel("NDCG@10")
    left.set_title("Relevance vs diversity (labels: λ)")
    lam = [p["mmr_lambda"] for p in sweep]
    for metric, style in (("ndcg@10", "-o"), ("ild@10", "-s"), ("coverage", "-^")):
        values = np.array([p[metric] for p in sweep])
        right.plot(
            lam,
            values / max(values.max(), 1e-12),
            style,
            markersize=4,
            label=f"{metric} (max {values.max():.3f})",
        )
    right.set_xlabel("MMR λ (1 = relevance only)")
    right.set_ylabel("share of the metric's maximum over λ")
    right.set_title("Each metric across λ")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(fontsize=8)
    return fig


def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG."""
    fig.savefig(path, dpi=120)
