"""What one `sona eval` run is asked for (`EvalOptions`: protocol, seed, list length, the grids
tried on validation), and the log and clock callables it reports through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sona_jax.eval.learned_fusion import FusionFitSettings
from sona_jax.eval.sasrec import SASRecSettings
from sona_jax.eval.weight_search import WeightSearch

LogFn = Callable[[str], None]
Clock = Callable[[], float]


@dataclass
class EvalOptions:
    protocol: str = "p1"
    seed: int = 0
    k: int = 10  # list length every metric is measured at
    tune_fusion: bool = True
    # fixed fusion weights: random points, draws around the best, then a coordinate search
    # (its seed is the run's)
    weight_search: WeightSearch = WeightSearch()
    # graph settings tried on validation (each overrides the configured [graph] section):
    # how the walk seeds (recency, how many, how weighted) and whether hop 1 is dense
    graph_settings: tuple[tuple[tuple[str, object], ...], ...] = (
        (("seed_position_decay", 1.0), ("recent_items", 256)),
        (("seed_position_decay", 0.9), ("recent_items", 100)),
        (("seed_position_decay", 0.8), ("recent_items", 100)),
        (("seed_position_decay", 0.8), ("recent_items", 256)),
        (("seed_position_decay", 1.0), ("recent_items", 256), ("first_hop", "dense")),
        (
            ("seed_position_decay", 1.0),
            ("recent_items", 256),
            ("first_hop", "dense"),
            ("seed_weighting", "uniform"),
            ("hops", 1),
        ),
    )
    # the learned fusion (`learned_fusion`): fitted on validation, used when its cross-fitted
    # validation NDCG beats the fixed weights' with a paired interval above zero
    learned_fusion: bool = True
    fusion_fit: FusionFitSettings = FusionFitSettings()
    # MMR λ tried on validation for the headline row (with the best weights and seeds)
    mmr_lambdas: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    cold_start_users: int = 500
    cold_start_points: tuple[int, ...] = (0, 1, 3, 5, 10)
    # cold start's genre strength tried on validation (empty: keep the configured one), with
    # validation users cut to these numbers of events
    cold_genre_strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    cold_tune_points: tuple[int, ...] = (1, 3, 5)
    ease_l2_grid: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0)
    als_grid: tuple[tuple[int, float], ...] = ((32, 0.05), (64, 0.05), (128, 0.1))
    # RP3beta (alpha, beta, neighbours per item)
    rp3beta_grid: tuple[tuple[float, float, int], ...] = tuple(
        (alpha, beta, neighbours)
        for alpha in (0.5, 1.0)
        for beta in (0.0, 0.25, 0.5)
        for neighbours in (100, 400)
    )
    sasrec: SASRecSettings = SASRecSettings()
    # the hybrid's transformer source reads the SASRec baseline's network (trained once, on the
    # validation split's train part), its fusion weight tuned with the others
    transformer_source: bool = True
    # how same-second events are ordered (`splits.order_ties`); P1's robustness pass orders
    # them at random with each of these seeds
    tie_break: str = "hashed"
    random_tie_seeds: tuple[int, ...] = (1,)

    @property
    def ndcg(self) -> str:
        return f"ndcg@{self.k}"
