"""The engine's one typed, validated configuration object (`SonaConfig`).

Every engine constant of SPEC.md lives here with its default; `configs/default.toml` spells them
out (its ``[serving]`` table belongs to the service, `service.settings`). Unknown keys and
out-of-range values raise `ConfigError` naming the key (``lora.rank``).

Each field is marked **train-time** (it shapes a trained model version: the base tier, the
tables, the adapters) or **serve-time** (it only changes how a model is scored). A model version
remembers its config; `SonaConfig.train_digest` hashes the train-time part, so two configs
with the same digest can share one trained model, and `SonaConfig.check_trained_with` stops
serving a model under a config whose train-time part disagrees, naming the key.

Example:
    >>> cfg = SonaConfig().with_overrides({"lora": {"rank": 4}})
    >>> cfg.lora.rank, SonaConfig.stage("lora", "rank"), SonaConfig.stage("fusion", "context")
    (4, 'train', 'serve')
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TRAIN, SERVE = "train", "serve"


class ConfigError(ValueError):
    """A configuration file or fragment is invalid; the message names the key."""


def train(default: Any, **options: Any) -> Any:
    """A train-time field: changing it needs a newly trained model version."""
    return Field(default, json_schema_extra={"stage": TRAIN}, **options)


def serve(default: Any, **options: Any) -> Any:
    """A serve-time field: it changes how a trained model is scored, never the model."""
    return Field(default, json_schema_extra={"stage": SERVE}, **options)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    embedding_dim: int = train(512, ge=8, le=4096, description="d: item and preference size")
    seed: int = train(0, ge=0, description="seed for every random choice of the engine")


class PreferenceConfig(_Section):
    """SPEC 3.1: which events count and how much."""

    completion_threshold: float = train(0.3, ge=0.0, le=1.0)
    rated_override_min: int = train(4, ge=1, le=5, description="rating that keeps a short watch")
    decay_base: float = train(0.95, gt=0.0, le=1.0, description="decay per decay_period_days")
    decay_period_days: float = train(30.0, gt=0.0)
    high_rating_min: int = train(4, ge=1, le=5)
    high_rating_boost: float = train(1.5, ge=0.0)
    low_rating_max: int = train(2, ge=1, le=5)
    low_rating_factor: float = train(0.5, ge=0.0)
    full_completion_min: float = train(0.95, ge=0.0, le=1.0)
    full_completion_boost: float = train(1.2, ge=0.0)
    max_weight: float = train(2.0, gt=0.0)
    genre_smoothing: float = train(0.1, gt=0.0, description="Laplace smoothing of genres")
    recency_window_days: float = train(7.0, gt=0.0)


class BaseTierConfig(_Section):
    """SPEC 4.1: fitting the shared, frozen tier."""

    item_factors: int = train(64, ge=2, le=1024, description="SVD rank when fitting embeddings")
    genre_weight: float = train(0.3, ge=0.0, description="share of genre features in fitted E")
    calibration_steps: int = train(200, ge=1, le=100_000)
    calibration_learning_rate: float = train(0.05, gt=0.0)
    calibration_pairs: int = train(
        50_000, ge=1, description="most (viewer, watched item) pairs W and b are fitted on"
    )


class LoraConfig(_Section):
    """SPEC 3.2: the per-user adapter."""

    rank: int = train(8, ge=1, le=256)
    alpha: float = train(16.0, gt=0.0)
    iterations: int = train(5, ge=1, le=1000)
    learning_rate: float = train(0.05, gt=0.0, le=10.0)
    clip_norm: float = train(1.0, gt=0.0)
    max_events: int = train(50, ge=1, le=4096, description="recent events used per training")
    negatives_per_user: int = train(50, ge=0, le=4096)
    min_events: int = train(10, ge=1)
    train_interval_seconds: float = serve(300.0, ge=0.0)
    retrain_every_events: int = serve(10, ge=1)
    train_chunk_users: int = train(1024, ge=1, le=65536, description="users per vmapped call")
    users_per_step: int = serve(
        64, ge=1, le=65536, description="users a training call vmaps over at a time (cache-sized)"
    )

    @property
    def scale(self) -> float:
        """alpha / rank, the LoRA scaling."""
        return self.alpha / self.rank


Gate = tuple[float, float, float, float, float, float]  # one per source, SOURCE_NAMES order


class FusionConfig(_Section):
    """SPEC 3.3 weights; they need not sum to one, they are renormalised over present sources.

    The learned fusion (`sona_jax.serve.fusion.viewer_weights`) scales each weight per viewer
    by exp(gate_history · h + gate_context · c): h = log(1 + qualifying events) / log(1 +
    cold_start.blend_events), c = 1 when the request has a context. All-zero gates are the
    fixed-weight fusion; `sona eval` learns them (and the weights) on validation."""

    collaborative: float = serve(0.35, ge=0.0)
    content_based: float = serve(0.25, ge=0.0)
    graph_based: float = serve(0.30, ge=0.0)
    sequential: float = serve(
        0.0, ge=0.0, description="next-watch transitions (not in SPEC 3.3's four: off by default)"
    )
    transformer: float = serve(
        0.0,
        ge=0.0,
        description="the self-attentive sequence model (not in SPEC 3.3's four: off by default; "
        "it needs a model trained with transformer.epochs > 0)",
    )
    context: float = serve(0.10, ge=0.0)
    gate_history: Gate = serve((0.0,) * 6, description="per source, SOURCE_NAMES order")
    gate_context: Gate = serve((0.0,) * 6, description="per source, SOURCE_NAMES order")

    @model_validator(mode="after")
    def _some_weight(self) -> FusionConfig:
        total = (
            self.collaborative
            + self.content_based
            + self.graph_based
            + self.sequential
            + self.transformer
        )
        if total + self.context <= 0:
            raise ValueError("at least one fusion weight must be positive")
        return self


class CollaborativeConfig(_Section):
    neighbours: int = serve(50, ge=1, le=10_000, description="K nearest viewers")
    history_items: int = train(256, ge=1, le=4096, description="engaged items kept per viewer")
    vote_items: int = serve(
        128,
        ge=1,
        le=4096,
        description="a neighbour's most recent engaged items that vote (at most history_items)",
    )
    approximate_from: int = serve(
        200_000,
        ge=0,
        description="pool viewers from which nearest viewers are searched approximately (faiss "
        "HNSW, then scored exactly); 0: always exact",
    )
    hnsw_links: int = serve(32, ge=4, le=256, description="HNSW links per viewer (faiss M)")
    hnsw_build_depth: int = serve(80, ge=8, le=2048, description="HNSW efConstruction")
    hnsw_search_depth: int = serve(128, ge=8, le=4096, description="HNSW efSearch")


class GraphConfig(_Section):
    hops: int = serve(2, ge=1, le=4)
    decay: float = serve(0.8, gt=0.0, le=1.0)
    recent_items: int = serve(
        32, ge=1, le=4096, description="most recent engaged items the walk starts from"
    )
    seed_position_decay: float = serve(
        0.9, gt=0.0, le=1.0, description="seed weight x this per position back in the history"
    )
    seed_weighting: Literal["engagement", "uniform"] = serve(
        "engagement", description="seed mass: decayed engagement, or 1 per engaged item"
    )
    neighbours: int = train(128, ge=1, le=4096, description="adjacency list width per item")
    frontier: int = serve(32, ge=1, le=4096, description="items a hop expands from")
    max_user_items: int = train(
        1000, ge=2, le=100_000, description="most recent items per viewer in the graph"
    )
    weighting: Literal["cosine", "regression"] = train(
        "regression", description="edge weights: cosine co-engagement or item-item regression"
    )
    regression_l2: float = train(500.0, gt=0.0, description="ridge of the regression weighting")
    first_hop: Literal["sparse", "dense"] = train(
        "sparse",
        description="hop 1 over the adjacency lists, or over the full regression "
        "matrix (catalogues up to max_dense_items; needs weighting = regression); the model "
        "keeps that matrix only when dense, and its walk follows what it keeps",
    )
    max_dense_items: int = train(
        4096, ge=0, description="largest catalogue whose full items x items matrix is kept"
    )
    max_regression_items: int = train(
        10_000, ge=1, description="larger catalogues use cosine (the inverse is dense, O(n³))"
    )
    block_items: int = train(
        2048, ge=1, description="item rows of the co-engagement matrix computed at once"
    )
    block_cells: int = train(
        1 << 24,
        ge=1,
        description="most cells (item rows x items) of that matrix at once: fewer rows per "
        "block at a large catalogue, so its memory does not grow with the catalogue",
    )


class SequentialConfig(_Section):
    """The sequential source: what viewers engage with next. Item j scores from a viewer's
    latest engaged items i by how often j followed i within ``window`` engaged events of the
    same viewer (weight ``window_decay`` per step apart), each item's row normalised to sum 1."""

    window: int = train(5, ge=1, le=64, description="later engaged events an item links to")
    window_decay: float = train(0.8, gt=0.0, le=1.0, description="link weight x this per step")
    neighbours: int = train(64, ge=1, le=4096, description="successor list width per item")
    recent_items: int = serve(
        10, ge=1, le=4096, description="latest engaged items the source starts from"
    )
    position_decay: float = serve(
        0.8, gt=0.0, le=1.0, description="a start item's weight x this per position back"
    )


class TransformerConfig(_Section):
    """The transformer source: a self-attentive sequence model (SASRec, `model.sequence_model`)
    trained with `sona train` on every event of the log in time order, full-softmax
    cross-entropy; served from the viewer's latest ``max_len`` engaged items. ``epochs`` 0
    trains none (the source then says nothing, whatever its fusion weight)."""

    epochs: int = train(0, ge=0, le=1000, description="training epochs (0: no transformer)")
    dim: int = train(64, ge=4, le=1024, description="hidden size")
    blocks: int = train(2, ge=1, le=16, description="self-attention blocks")
    heads: int = train(1, ge=1, le=16, description="attention heads (dim must divide by it)")
    # ML-100K viewers have a median of 65 ratings
    max_len: int = train(50, ge=2, le=1024, description="latest items a window reads")
    dropout: float = train(0.2, ge=0.0, lt=1.0)
    # 1e-3 had not converged after 60 epochs on ML-100K P1
    learning_rate: float = train(3e-3, gt=0.0, le=1.0, description="Adam step size")
    batch: int = train(128, ge=1, le=65_536, description="windows per training step")

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.dim % self.heads:
            raise ValueError("dim must be a multiple of heads")
        return self


class ContextConfig(_Section):
    popularity_smoothing: float = train(20.0, ge=0.0, description="pseudo-events toward global")
    tv_min_minutes: float = serve(60.0, ge=0.0)
    mobile_max_minutes: float = serve(30.0, ge=0.0)


class CandidateConfig(_Section):
    per_source: int = serve(100, ge=1, le=10_000)
    trending: int = serve(50, ge=0, le=10_000)
    trending_window_days: float = train(14.0, gt=0.0)
    explain_from: int = serve(20, ge=1, le=1000, description="recent items explanations cite")
    max_seen_items: int = train(
        4096, ge=1, description="most watched / dismissed items kept per viewer for exclusion"
    )

    @model_validator(mode="after")
    def _trending_fits(self) -> CandidateConfig:
        if self.trending > self.per_source:
            raise ValueError("trending must not exceed per_source")
        return self


class DiversityConfig(_Section):
    mmr_lambda: float = serve(0.7, ge=0.0, le=1.0)
    pool_size: int = serve(100, ge=1, le=1000, description="fused top items MMR chooses from")
    dimensions: int = serve(32, ge=2, le=4096, description="principal directions MMR compares")


class FiltersConfig(_Section):
    """Request filters (`sona_jax.serve.filters`) and what a dismissal does to its neighbours."""

    max_excluded_ids: int = serve(
        100, ge=1, le=100, description="most exclude_content_ids a request may carry"
    )
    dismissal_penalty: float = serve(
        0.5, ge=0.0, le=1.0, description="relevance taken off an item as close as a dismissed one"
    )
    dismissal_min_similarity: float = serve(
        0.5, ge=-1.0, lt=1.0, description="least cosine to a dismissed item that is penalised"
    )


class ColdStartConfig(_Section):
    """SPEC 3.5. Ranking reads these per request (`sona_jax.serve.fusion.cold_start_row`), so
    experiment variants may change them without compiling anything; ``most_exploration`` sets
    the compiled number of exploration slots."""

    min_events: int = serve(3, ge=0)
    blend_events: int = serve(20, ge=1)
    exploration_floor: float = serve(0.05, ge=0.0, le=1.0)
    exploration_start: float = serve(0.2, ge=0.0, le=1.0)
    exploration_decay: float = serve(0.995, gt=0.0, le=1.0)
    genre_strength: float = serve(
        0.5, ge=0.0, le=5.0, description="exponent of the genre fit on popularity"
    )
    most_exploration: float = serve(
        0.3,
        ge=0.0,
        le=1.0,
        description="the largest exploration share (floor or start) this config or a variant "
        "may ask for: it sets the compiled number of exploration slots",
    )

    @model_validator(mode="after")
    def _exploration_within_bound(self) -> ColdStartConfig:
        for name in ("exploration_floor", "exploration_start"):
            if getattr(self, name) > self.most_exploration:
                raise ValueError(
                    f"{name} {getattr(self, name)} is above most_exploration "
                    f"{self.most_exploration} (which sets the compiled exploration slots)"
                )
        return self


class CatalogueConfig(_Section):
    """SPEC 4.2: items added after a model version (metadata map, capacity, their share)."""

    metadata_l2: float = train(
        1.0, gt=0.0, description="ridge strength of the metadata -> embedding map"
    )
    title_buckets: int = train(256, ge=1, description="hashed title words (features)")
    series_buckets: int = train(256, ge=1, description="hashed series ids (features)")
    duration_edges: tuple[float, ...] = train(
        (30.0, 60.0, 90.0, 120.0, 150.0), description="minutes: duration bins of the map"
    )
    year_edges: tuple[float, ...] = train(
        (1960.0, 1970.0, 1980.0, 1990.0, 2000.0, 2010.0, 2020.0),
        description="release-year bins of the map",
    )
    new_item_share: float = serve(
        0.1, ge=0.0, le=1.0, description="share of each list offered to items newer than the model"
    )
    new_item_min_fit: float = serve(
        0.1, ge=-1.0, le=1.0, description="least cosine of viewer and new item to offer it"
    )
    capacity_growth: float = serve(
        0.03125,
        gt=0.0,
        le=4.0,
        description="growing tables (catalogue, kNN pool) are padded in steps of this share",
    )
    capacity_min_step: int = serve(64, ge=1, description="and in steps of at least this many rows")
    capacity_headroom: float = serve(
        0.5,
        gt=0.0,
        le=4.0,
        description="full item arrays grow to hold this share more than the rows in use "
        "(geometric: a catalogue that grows tenfold changes shape about six times)",
    )


class SonaConfig(_Section):
    """The engine's whole configuration: one object from TOML to every engine function."""

    model: ModelConfig = ModelConfig()
    preference: PreferenceConfig = PreferenceConfig()
    base: BaseTierConfig = BaseTierConfig()
    lora: LoraConfig = LoraConfig()
    fusion: FusionConfig = FusionConfig()
    collaborative: CollaborativeConfig = CollaborativeConfig()
    graph: GraphConfig = GraphConfig()
    sequential: SequentialConfig = SequentialConfig()
    transformer: TransformerConfig = TransformerConfig()
    context: ContextConfig = ContextConfig()
    candidates: CandidateConfig = CandidateConfig()
    diversity: DiversityConfig = DiversityConfig()
    filters: FiltersConfig = FiltersConfig()
    cold_start: ColdStartConfig = ColdStartConfig()
    catalogue: CatalogueConfig = CatalogueConfig()

    def with_overrides(self, overrides: dict[str, Any]) -> SonaConfig:
        """A copy with nested ``{"section": {"key": value}}`` overrides, validated."""
        return config_from_dict(deep_merge(self.model_dump(), overrides))

    @classmethod
    def stage(cls, section: str, key: str) -> str:
        """``"train"`` or ``"serve"`` for ``section.key``."""
        info = cls.model_fields[section].annotation.model_fields[key]
        return (info.json_schema_extra or {}).get("stage", TRAIN)

    def train_time(self) -> dict[str, dict[str, Any]]:
        """Every train-time setting, nested by section."""
        return {
            section: {k: v for k, v in keys.items() if self.stage(section, k) == TRAIN}
            for section, keys in self.model_dump().items()
        }

    def train_digest(self) -> str:
        """A short hash of `train_time`: equal digests can share one trained model."""
        text = json.dumps(self.train_time(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def train_time_differences(self, other: SonaConfig) -> list[str]:
        """``section.key: mine vs other`` for each train-time setting that differs."""
        mine, theirs = self.train_time(), other.train_time()
        return [
            f"{section}.{key}: {value!r} vs {theirs[section][key]!r}"
            for section, keys in mine.items()
            for key, value in keys.items()
            if theirs[section][key] != value
        ]

    def check_trained_with(self, trained: SonaConfig, what: str = "the model") -> None:
        """Raise `ConfigError` naming each train-time key where this (served) config
        disagrees with the config ``what`` was trained with."""
        differences = self.train_time_differences(trained)
        if differences:
            raise ConfigError(
                f"the served config disagrees with the config {what} was trained with "
                "(served vs trained): " + "; ".join(differences)
            )


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge; ``extra`` wins."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def format_errors(error: ValidationError, source: str) -> str:
    """One line per problem: ``source: section.key: message`` (a ``source`` ending in
    ``: section`` prefixes the key with that section instead)."""
    source, _, section = source.partition(": ")
    lines = []
    for item in error.errors():
        key = ".".join([section] * bool(section) + [str(part) for part in item["loc"]])
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{source}: {key or '<root>'}: {message}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "config") -> SonaConfig:
    """Validate a nested dict into a `SonaConfig`; raises `ConfigError` naming bad keys."""
    try:
        return SonaConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_errors(error, source)) from None
