"""P1's robustness pass: the rows refit after same-second events are put in a random (seeded)
order, with the settings chosen on the main order's validation split."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.data.schema import Dataset
from sona_jax.eval.baseline_rows import hybrid_intervals, matrix_of
from sona_jax.eval.engines import TrainedEngines, context_arrays
from sona_jax.eval.metrics import per_user_ndcg, top_from_scores
from sona_jax.eval.ranking import rank
from sona_jax.eval.sasrec import SASRec
from sona_jax.eval.splits import order_ties, protocol_splits, subset
from sona_jax.eval.weight_search import one_hot_weights
from sona_jax.model.sequence_model import flat_params, user_sequences
from sona_jax.serve.fusion import SOURCE_NAMES

if TYPE_CHECKING:
    from sona_jax.eval.options import EvalOptions, LogFn


def random_tie_pass(
    dataset: Dataset,
    cfg: SonaConfig,
    weights: np.ndarray,
    mmr_lambda: float,
    chosen: dict,
    seed: int,
    options: EvalOptions,
    log_fn: LogFn,
) -> dict:
    """The hybrid, each of its sources and every baseline with the settings already chosen,
    refit after same-second events are put in a random (seeded) order: NDCG per row and the
    hybrid's paired interval against each. Nothing is re-tuned, so every row's settings were
    chosen on the main order's validation split, whose held-out item can be this order's test
    item (the same for every row: a check of the order's effect, not a fresh evaluation)."""
    shuffled = order_ties(dataset, "random", seed)
    split, val_split = protocol_splits(shuffled, options)
    users, k = split.users, options.k
    log = shuffled.events
    refit = {}
    for name, model in chosen.items():
        if isinstance(model, SASRec):
            # as in the main row: the chosen epochs on the validation split's train part, then
            # read each viewer's whole train sequence
            model = SASRec(model.config, epochs=model.epochs).fit(
                user_sequences(log, val_split.train, shuffled.n_users), shuffled.n_items
            )
            model.reading(user_sequences(log, split.train, shuffled.n_users))
        refit[name] = model
    # the transformer source reads the refit SASRec's network, as in the main pass (without
    # `transformer_source`, the config's own network is trained there and here)
    refit_network = (flat_params(m.params) for m in refit.values() if isinstance(m, SASRec))
    transformer = next(refit_network, None) if options.transformer_source else None
    engine = TrainedEngines(subset(shuffled, split.train), transformer)(cfg)
    tod, device = context_arrays(split, users, True)
    lists = {"sona-hybrid": rank(engine, users, weights, mmr_lambda, tod, device, k)}
    for s, name in enumerate(SOURCE_NAMES):  # each source alone, as in the main pass
        lists[name] = rank(engine, users, one_hot_weights(s), 1.0, tod, device, k)
    train_matrix = matrix_of(shuffled, split.train)
    for name, model in refit.items():
        if not isinstance(model, SASRec):
            model = model.fit(train_matrix)
        lists[name] = top_from_scores(model.scores(users), train_matrix, users, k)
    per_user = {name: per_user_ndcg(top, split.test, users)[0] for name, top in lists.items()}
    rows = [
        {"name": name, "metrics": {options.ndcg: float(v.mean())}} for name, v in per_user.items()
    ]
    hybrid_intervals(rows[1:], per_user, per_user["sona-hybrid"], options.seed)
    log_fn(
        f"random ties (seed {seed}): "
        + ", ".join(f"{row['name']} {row['metrics'][options.ndcg]:.4f}" for row in rows)
    )
    return {"seed": seed, "rows": rows}
