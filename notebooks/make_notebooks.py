"""Write the research notebooks of this folder from the cell sources below (outputs empty).

    python notebooks/make_notebooks.py            # rewrite the three .ipynb files
    python notebooks/make_notebooks.py --execute  # ... and run them in place (fills the figures)

Each notebook loads its data through the engine's loaders (`experiments.research_dataset`:
MovieLens 100K when found, else synthetic; ``SONA_NOTEBOOK_SMALL=1`` forces small synthetic data)
and scores with the same `recommend` call the service makes. Run top to bottom, they reproduce
their figures: every random choice is seeded and nothing depends on hidden state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(source: str) -> tuple[str, str]:
    """A markdown cell."""
    return ("md", source)


def code(source: str) -> tuple[str, str]:
    """A code cell."""
    return ("code", source)


SETUP = """\
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
{imports}
from sona_jax.config import SonaConfig
{engine_imports}from sona_lab import notebook as ex

SMALL = ex.notebook_small()  # SONA_NOTEBOOK_SMALL=1: 300 x 400 synthetic, for the tests
dataset = ex.research_dataset(seed=0)
cfg = SonaConfig().with_overrides({"model": {"embedding_dim": 32 if SMALL else 128}})
splits = ex.make_splits(dataset, "p1", seed=0)  # P1 next-watch; validation carved from train
print(
    f"{dataset.name}: {dataset.n_users} users, {dataset.n_items} items, "
    f"{len(dataset.events)} events; {len(splits.validation.users)} validation users"
)"""

DISPLAY = "from IPython.display import display\n"
SOURCES = "from sona_jax.serve.fusion import SOURCE_NAMES, fusion_weights\n"


def setup(imports: str = "", engine_imports: str = "") -> str:
    """The first code cell: imports, data, config and splits."""
    return SETUP.replace("{imports}", imports).replace("{engine_imports}", engine_imports)


DATA_NOTE = """\
Data: MovieLens 100K when it is found (`$SONA_ML100K` or `../shared/datasets/ml-100k` beside the
repository; it is never shipped with the project), otherwise the seeded synthetic generator.
`SONA_NOTEBOOK_SMALL=1` forces a small synthetic set so the tests run these notebooks quickly.
Everything is tuned on a **validation split carved from the training events**; the test split is
touched once, at the end."""

TUNING = [
    md(
        """\
# Tuning the fusion weights

SONA blends five sources — collaborative (kNN viewers), content-based (the preference vector with
the viewer's LoRA adapter), graph-based (walks over the co-engagement graph), sequential (what
viewers engage with next after the viewer's latest items) and context (device and time of day) —
by a weighted sum of their scores, each min-max normalised over the request's
candidates. Weights are renormalised over the sources active for a viewer, so only their
**shares** matter. This notebook scores a grid over the simplex of shares on a validation split,
shows which source carries the ranking, and checks the tuned weights once on the test split.

"""
        + DATA_NOTE
    ),
    code(setup(DISPLAY, SOURCES)),
    md("""\
## One model, many weightings

Fusion weights are serving-time settings: the model is trained once on the validation split's
training events, and every weighting is scored with the same `recommend` call the service makes
(MMR off, λ = 1, so only relevance counts)."""),
    code("""\
from itertools import product

validation = ex.Scorer(dataset, splits.validation, "p1")
STEPS = 4  # shares in multiples of 1/4: 70 points of the simplex, each source alone included
grid = [
    np.array(c) / STEPS
    for c in product(range(STEPS + 1), repeat=len(SOURCE_NAMES))
    if sum(c) == STEPS
]


def weighted(shares, mmr_lambda=1.0):
    return cfg.with_overrides(
        {
            "fusion": dict(zip(SOURCE_NAMES, map(float, shares), strict=True)),
            "diversity": {"mmr_lambda": mmr_lambda},
        }
    )


records = []
for shares in grid:
    metrics = validation.metrics(weighted(shares))
    params = {f"fusion.{n}": float(s) for n, s in zip(SOURCE_NAMES, shares, strict=True)}
    records.append(
        {
            "params": params | {"diversity.mmr_lambda": 1.0},
            "metrics": metrics,
            "objective": metrics["ndcg@10"],
        }
    )
configured = validation.metrics(cfg.with_overrides({"diversity": {"mmr_lambda": 1.0}}))
ranked = sorted(records, key=lambda r: -r["objective"])
print(
    f"configured {[round(float(w), 2) for w in fusion_weights(cfg)]}: "
    f"NDCG@10 {configured['ndcg@10']:.4f}"
)
for r in ranked[:5]:
    print(f"{[r['params'][f'fusion.{n}'] for n in SOURCE_NAMES]}: NDCG@10 {r['objective']:.4f}")"""),
    md("## Each source alone, the configured blend and the best blend"),
    code("""\
alone = {
    n: next(r["objective"] for r in records if r["params"][f"fusion.{n}"] == 1.0)
    for n in SOURCE_NAMES
}
labels = [*alone, "configured blend", "best blend on the grid"]
values = [*alone.values(), configured["ndcg@10"], ranked[0]["objective"]]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.barh(labels, values, color=["tab:gray"] * len(alone) + ["tab:orange", "tab:green"])
for row, value in enumerate(values):
    ax.text(value, row, f" {value:.3f}", va="center", fontsize=8)
ax.invert_yaxis()
ax.set_xlabel("NDCG@10 on validation (λ = 1)")
ax.set_title(f"Best blend {values[-1]:.3f} vs best single source {max(alone.values()):.3f}")
plt.show()"""),
    md("""\
## Effect of each weight

Each panel plots NDCG@10 against one source's share; the red line is a least-squares fit (its
slope is the change in NDCG@10 per unit of share). The same figure is `weights_effect.png` of
`sona experiment`."""),
    code("""\
display(ex.weights_effect_figure(records, cfg, "ndcg@10"))
for name, effect in ex.weight_effects(records, cfg).items():
    print(f"{name:>14}: slope {effect['slope']:+.3f} NDCG@10 per unit share, r {effect['r']:+.2f}")"""),
    md("## Where the good blends are: collaborative vs graph share (best over the rest)"),
    code("""\
heat = np.full((STEPS + 1, STEPS + 1), np.nan)
for r in records:
    i = round(r["params"]["fusion.collaborative"] * STEPS)
    j = round(r["params"]["fusion.graph_based"] * STEPS)
    heat[i, j] = np.fmax(heat[i, j], r["objective"])
fig, ax = plt.subplots(figsize=(5.5, 4.5))
image = ax.imshow(heat, origin="lower", cmap="viridis")
for (i, j), value in np.ndenumerate(heat):
    if np.isfinite(value):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color="white")
ticks = [f"{t / STEPS:g}" for t in range(STEPS + 1)]
ax.set_xticks(range(STEPS + 1), ticks)
ax.set_yticks(range(STEPS + 1), ticks)
ax.set_xlabel("graph_based share")
ax.set_ylabel("collaborative share")
fig.colorbar(image, label="best NDCG@10 (validation)")
plt.show()"""),
    md("""\
## Once on the test split

The model is retrained on the full training split and both weightings are served with the
configured MMR λ. Carry the winner into an experiment file (`configs/experiments/`) to search it
jointly with λ and the adapter settings."""),
    code("""\
test = ex.Scorer(dataset, splits.test, "p1")
best = [ranked[0]["params"][f"fusion.{n}"] for n in SOURCE_NAMES]
for name, setting in (("configured", cfg), ("tuned", weighted(best, cfg.diversity.mmr_lambda))):
    m = test.metrics(setting)
    print(
        f"{name:>10}: NDCG@10 {m['ndcg@10']:.4f}  HR@10 {m['hr@10']:.4f}  "
        f"coverage {m['coverage']:.3f}  ILD@10 {m['ild@10']:.3f}"
    )"""),
]

MMR = [
    md(
        """\
# The MMR λ trade-off: relevance vs diversity and coverage

After fusion, SONA re-ranks the top of the blend with maximal marginal relevance: each next item
maximises `λ · relevance − (1 − λ) · max cosine similarity to the items already chosen`. λ = 1 is
pure relevance; smaller λ buys intra-list diversity (ILD@10, mean pairwise cosine distance of a
list) and catalogue coverage with some accuracy (NDCG@10). This notebook sweeps λ on a validation
split and shows the curve the service's `diversity.mmr_lambda` picks a point on.

"""
        + DATA_NOTE
    ),
    code(setup(DISPLAY, "")),
    md("""\
## Sweep λ

MMR λ is a request value: one trained model serves every point of the sweep."""),
    code("""\
validation = ex.Scorer(dataset, splits.validation, "p1")
lambdas = np.round(np.linspace(0.0, 1.0, 11 if SMALL else 21), 2)
sweep = ex.lambda_sweep(validation, cfg, lambdas)
print(" λ     NDCG@10  HR@10   ILD@10  coverage")
for p in sweep:
    print(
        f"{p['mmr_lambda']:.2f}  {p['ndcg@10']:.4f}   {p['hr@10']:.3f}   {p['ild@10']:.3f}"
        f"   {p['coverage']:.3f}"
    )"""),
    code("display(ex.lambda_tradeoff_figure(sweep))"),
    md("""\
## Per viewer: how diverse are the lists?

The mean hides the spread: the histogram shows each validation viewer's ILD@10 at three values of
λ, and how much of each list comes from the long tail (items outside the 10 % most watched)."""),
    code("""\
vectors = np.asarray(validation.engine(cfg).model.base.item_embeddings)
unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
watched = np.bincount(dataset.events.item[splits.validation.train], minlength=dataset.n_items)
head = np.argsort(-watched)[: max(1, dataset.n_items // 10)]


def per_user_ild(top):
    v = unit[np.maximum(top, 0)]
    sim = np.einsum("ukd,uld->ukl", v, v)
    k = top.shape[1]
    return 1.0 - (sim.sum((1, 2)) - np.trace(sim, axis1=1, axis2=2)) / (k * (k - 1))


fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for lam in (1.0, cfg.diversity.mmr_lambda, 0.3):
    left.hist(per_user_ild(validation.top(cfg, lam)), bins=30, alpha=0.5, label=f"λ = {lam:g}")
left.set_xlabel("ILD@10 of one viewer's list")
left.set_ylabel("viewers")
left.legend()
tail = [1.0 - np.isin(validation.top(cfg, p["mmr_lambda"]), head).mean() for p in sweep]
right.plot([p["mmr_lambda"] for p in sweep], tail, "-o", markersize=4)
right.set_xlabel("MMR λ")
right.set_ylabel("share of served slots from the long tail")
right.grid(alpha=0.3)
plt.show()"""),
    md("""\
## Choosing λ

A simple rule: the smallest λ whose NDCG@10 stays within 5 % of pure relevance (λ = 1)."""),
    code("""\
top = sweep[-1]["ndcg@10"]
pick = min((p for p in sweep if p["ndcg@10"] >= 0.95 * top), key=lambda p: p["mmr_lambda"])
print(
    f"λ = {pick['mmr_lambda']:g}: NDCG@10 {pick['ndcg@10']:.4f} (λ = 1: {top:.4f}), "
    f"ILD@10 {pick['ild@10']:.3f} (λ = 1: {sweep[-1]['ild@10']:.3f}), "
    f"coverage {pick['coverage']:.3f} (λ = 1: {sweep[-1]['coverage']:.3f}); "
    f"configured diversity.mmr_lambda = {cfg.diversity.mmr_lambda}"
)"""),
]

COLD = [
    md(
        """\
# Cold start: the first events of a viewer

A new viewer has no preference vector, no graph seeds and no neighbours. SONA serves them
popularity shaped by genre and context, and blends the personal sources in as qualifying events
arrive: β = 0 below `cold_start.min_events`, then min(1, n / `blend_events`); while β < 1 a share
ε = max(0.05, 0.2 · 0.995ⁿ) of each list is exploration. This notebook shows those curves, then
cuts a group of validation viewers back to their first n events, retrains, and serves them with
the service's `recommend` to see accuracy and where each served item comes from.

"""
        + DATA_NOTE
    ),
    code(setup()),
    md("## The blending schedule"),
    code("""\
from sona_jax.serve.fusion import (
    KIND_NAMES,
    SOURCE_NAMES,
    blend_weight,
    cold_start_row,
    exploration_share,
)

n = np.arange(0, 41)
fig, ax = plt.subplots(figsize=(7, 3.5))
settings = cold_start_row(cfg)
ax.plot(
    n,
    np.asarray(blend_weight(n.astype(np.float32), settings)),
    label="β: weight of the personal blend",
)
ax.plot(
    n, np.asarray(exploration_share(n.astype(np.float32), settings)), label="ε: exploration share"
)
ax.set_xlabel("qualifying events")
ax.legend()
ax.grid(alpha=0.3)
plt.show()"""),
    md("""\
## Viewers cut to their first n events

A seeded group of validation viewers keeps only its first n training events (everyone else keeps
their full history, so the neighbours and the graph stay realistic); the model is retrained each
time and the group is served with the configured weights and MMR λ and the context of the held-out
event. Popularity is the baseline."""),
    code("""\
from sona_jax.eval.baselines import Popularity, interaction_matrix
from sona_jax.eval.metrics import ranking_metrics, top_from_scores
from sona_jax.eval.splits import subset
from sona_jax.model.train import train_model

log, val = dataset.events, splits.validation
rng = np.random.default_rng(0)
group = np.sort(rng.choice(val.users, min(len(val.users), 100 if SMALL else 300), replace=False))
points = [0, 2, 5, 10] if SMALL else [0, 1, 2, 3, 5, 10, 20, 40]
rows = []
for n_events in points + ["all"]:
    keep = (
        val.train
        if n_events == "all"
        else ex.first_events_mask(log, val.train, group, n_events, dataset.n_users)
    )
    model = train_model(subset(dataset, keep), cfg)
    items, kinds, contributions = ex.served(
        model,
        cfg,
        group,
        cfg.diversity.mmr_lambda,
        val.test_time_of_day[group],
        val.test_device[group],
    )
    seen = interaction_matrix(log.user[keep], log.item[keep], dataset.n_users, dataset.n_items)
    popular = top_from_scores(Popularity().fit(seen).scores(group), seen, group, 10)
    rows.append(
        {
            "events": n_events,
            "hybrid": ranking_metrics(items, val.test, group)["ndcg@10"],
            "popularity": ranking_metrics(popular, val.test, group)["ndcg@10"],
            "kinds": np.bincount(kinds[kinds >= 0], minlength=len(KIND_NAMES)) / kinds.size,
            "contributions": contributions.sum((0, 1)) / contributions.sum(),
        }
    )
    print(
        f"first {n_events!s:>3} events: NDCG@10 hybrid {rows[-1]['hybrid']:.4f}, "
        f"popularity {rows[-1]['popularity']:.4f}"
    )"""),
    code("""\
labels = [str(r["events"]) for r in rows]
x = np.arange(len(rows))
fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
left.plot(x, [r["hybrid"] for r in rows], "-o", label="SONA hybrid")
left.plot(x, [r["popularity"] for r in rows], "-s", label="popularity")
left.set_ylabel("NDCG@10 (validation)")
left.set_title("Accuracy over the first events")
left.legend()
left.grid(alpha=0.3)
colours = dict(zip(KIND_NAMES, plt.cm.tab10.colors, strict=False))
colours["context"] = colours["context_aware"]


def stacked(ax, key, names, title):
    bottom = np.zeros(len(rows))
    for k, name in enumerate(names):
        share = np.array([r[key][k] for r in rows])
        ax.bar(x, share, bottom=bottom, label=name, color=colours[name])
        bottom += share
    ax.set_ylabel("share")
    ax.set_title(title)


stacked(middle, "kinds", KIND_NAMES, "Reason reported for each served item")
stacked(right, "contributions", [*SOURCE_NAMES, "cold_start"], "Share of the served relevance")
middle.legend(fontsize=8, loc="lower left")
for ax in (left, middle, right):
    ax.set_xticks(x, labels)
    ax.set_xlabel("training events kept per viewer (first n)")
plt.show()"""),
    md("""\
What to look for: at 0 events the lists are cold start plus exploration; as β grows the personal
sources take over the relevance (right) and the hybrid pulls away from popularity (left). The
reason the API reports (middle) is the largest single contribution, so while β < 1 the undivided
cold-start share usually wins it even when the four personal sources together weigh more."""),
]

NOTEBOOKS = {
    "tuning_fusion_weights.ipynb": TUNING,
    "mmr_lambda_tradeoff.ipynb": MMR,
    "cold_start.ipynb": COLD,
}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook of markdown / code cells, outputs empty, for the python3 kernel."""
    notebook = new_notebook(
        cells=[
            new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells
        ]
    )
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:02d}"
    return notebook


def main(argv: list[str]) -> None:
    for name, cells in NOTEBOOKS.items():
        notebook = build(cells)
        if "--execute" in argv:
            from nbclient import NotebookClient

            NotebookClient(
                notebook,
                timeout=900,
                kernel_name="python3",
                resources={"metadata": {"path": str(HERE)}},
            ).execute()
        nbformat.write(notebook, HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main(sys.argv[1:])
