"""One typed, validated configuration object, loaded from TOML and passed to engine and service.

Every constant of SPEC.md lives here with its default; `configs/default.toml` spells them out.
Unknown keys and out-of-range values raise `ConfigError` naming the key (``lora.rank``).

Example:
    >>> cfg = load_config("configs/default.toml")
    >>> cfg.lora.rank
    8
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration file or fragment is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    embedding_dim: int = Field(512, ge=8, le=4096, description="d: item and preference vector size")
    seed: int = Field(0, ge=0, description="seed for every random choice of the engine")


class PreferenceConfig(_Section):
    """SPEC 3.1: which events count and how much."""

    completion_threshold: float = Field(0.3, ge=0.0, le=1.0)
    rated_override_min: int = Field(4, ge=1, le=5, description="rating that keeps a short watch")
    decay_base: float = Field(0.95, gt=0.0, le=1.0, description="decay per decay_period_days")
    decay_period_days: float = Field(30.0, gt=0.0)
    high_rating_min: int = Field(4, ge=1, le=5)
    high_rating_boost: float = Field(1.5, ge=0.0)
    low_rating_max: int = Field(2, ge=1, le=5)
    low_rating_factor: float = Field(0.5, ge=0.0)
    full_completion_min: float = Field(0.95, ge=0.0, le=1.0)
    full_completion_boost: float = Field(1.2, ge=0.0)
    max_weight: float = Field(2.0, gt=0.0)
    genre_smoothing: float = Field(0.1, gt=0.0, description="Laplace smoothing of genre affinities")
    recency_window_days: float = Field(7.0, gt=0.0)


class BaseTierConfig(_Section):
    """SPEC 4.1: fitting the shared, frozen tier."""

    item_factors: int = Field(64, ge=2, le=1024, description="SVD rank when fitting embeddings")
    genre_weight: float = Field(0.3, ge=0.0, description="share of genre features in fitted E")
    calibration_steps: int = Field(200, ge=1, le=100_000)
    calibration_learning_rate: float = Field(0.05, gt=0.0)


class LoraConfig(_Section):
    """SPEC 3.2: the per-user adapter."""

    rank: int = Field(8, ge=1, le=256)
    alpha: float = Field(16.0, gt=0.0)
    iterations: int = Field(5, ge=1, le=1000)
    learning_rate: float = Field(0.05, gt=0.0, le=10.0)
    clip_norm: float = Field(1.0, gt=0.0)
    max_events: int = Field(50, ge=1, le=4096, description="recent events used per training")
    negatives_per_user: int = Field(50, ge=0, le=4096)
    min_events: int = Field(10, ge=1)
    train_interval_seconds: float = Field(300.0, ge=0.0)
    retrain_every_events: int = Field(10, ge=1)
    train_chunk_users: int = Field(1024, ge=1, le=65536, description="users per vmapped call")

    @property
    def scale(self) -> float:
        """alpha / rank, the LoRA scaling."""
        return self.alpha / self.rank


class FusionConfig(_Section):
    """SPEC 3.3 weights; they need not sum to one, they are renormalised over present sources."""

    collaborative: float = Field(0.35, ge=0.0)
    content_based: float = Field(0.25, ge=0.0)
    graph_based: float = Field(0.30, ge=0.0)
    context: float = Field(0.10, ge=0.0)

    @model_validator(mode="after")
    def _some_weight(self) -> FusionConfig:
        if self.collaborative + self.content_based + self.graph_based + self.context <= 0:
            raise ValueError("at least one fusion weight must be positive")
        return self


class CollaborativeConfig(_Section):
    neighbours: int = Field(50, ge=1, le=10_000, description="K nearest viewers")
    history_items: int = Field(256, ge=1, le=4096, description="engaged items kept per viewer")
    vote_items: int = Field(
        128,
        ge=1,
        le=4096,
        description="a neighbour's most recent engaged items that vote (at most history_items)",
    )


class GraphConfig(_Section):
    hops: int = Field(2, ge=1, le=4)
    decay: float = Field(0.8, gt=0.0, le=1.0)
    recent_items: int = Field(
        32, ge=1, le=4096, description="most recent engaged items the walk starts from"
    )
    seed_position_decay: float = Field(
        0.9, gt=0.0, le=1.0, description="seed weight x this per position back in the history"
    )
    seed_weighting: Literal["engagement", "uniform"] = Field(
        "engagement", description="seed mass: decayed engagement, or 1 per engaged item"
    )
    neighbours: int = Field(128, ge=1, le=4096, description="adjacency list width per item")
    frontier: int = Field(32, ge=1, le=4096, description="items a hop expands from")
    max_user_items: int = Field(
        1000, ge=2, le=100_000, description="most recent items per viewer in the graph"
    )
    weighting: Literal["cosine", "regression"] = Field(
        "regression", description="edge weights: cosine co-engagement or item-item regression"
    )
    regression_l2: float = Field(500.0, gt=0.0, description="ridge of the regression weighting")
    first_hop: Literal["sparse", "dense"] = Field(
        "sparse",
        description="hop 1 over the adjacency lists, or over the full regression "
        "matrix (catalogues up to max_dense_items; needs weighting = regression)",
    )
    max_dense_items: int = Field(
        4096, ge=0, description="largest catalogue whose full items x items matrix is kept"
    )
    max_regression_items: int = Field(
        10_000, ge=1, description="larger catalogues use cosine (the inverse is dense, O(n³))"
    )


class ContextConfig(_Section):
    popularity_smoothing: float = Field(20.0, ge=0.0, description="pseudo-events toward global")
    tv_min_minutes: float = Field(60.0, ge=0.0)
    mobile_max_minutes: float = Field(30.0, ge=0.0)


class CandidateConfig(_Section):
    per_source: int = Field(100, ge=1, le=10_000)
    trending: int = Field(50, ge=0, le=10_000)
    trending_window_days: float = Field(14.0, gt=0.0)
    explain_from: int = Field(20, ge=1, le=1000, description="recent items explanations cite")

    @model_validator(mode="after")
    def _trending_fits(self) -> CandidateConfig:
        if self.trending > self.per_source:
            raise ValueError("trending must not exceed per_source")
        return self


class DiversityConfig(_Section):
    mmr_lambda: float = Field(0.7, ge=0.0, le=1.0)
    pool_size: int = Field(100, ge=1, le=1000, description="fused top items MMR chooses from")
    dimensions: int = Field(32, ge=2, le=4096, description="principal directions MMR compares in")


class ColdStartConfig(_Section):
    min_events: int = Field(3, ge=0)
    blend_events: int = Field(20, ge=1)
    exploration_floor: float = Field(0.05, ge=0.0, le=1.0)
    exploration_start: float = Field(0.2, ge=0.0, le=1.0)
    exploration_decay: float = Field(0.995, gt=0.0, le=1.0)
    genre_strength: float = Field(
        0.5, ge=0.0, le=5.0, description="exponent of the genre fit on popularity"
    )


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8082, ge=1, le=65535)
    batch_window_ms: float = Field(1.0, ge=0.0, le=1000.0)
    max_batch: int = Field(128, ge=1, le=128)
    engine_threads: int = Field(
        2, ge=1, le=64, description="engine calls in flight at once (per batcher)"
    )
    xla_threads: int = Field(
        1,
        ge=0,
        le=1024,
        description="threads XLA's CPU runtime runs "
        "engine calls on (0: one per core, XLA's default)",
    )
    gil_switch_ms: float = Field(
        0.5,
        gt=0.0,
        le=100.0,
        description="longest a thread holds the GIL while another waits (Python's default: 5)",
    )
    max_queue: int = Field(1024, ge=1)
    batching: bool = True
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_events_per_update: int = Field(1000, ge=1)
    max_batch_score_ids: int = Field(1000, ge=1)
    recommendation_ttl_seconds: int = Field(300, ge=0)
    cache_max_entries: int = Field(100_000, ge=1)
    warm_up: bool = Field(True, description="compile every batch bucket before serving")


class SonaConfig(_Section):
    """The whole configuration: one object from TOML to engine and service."""

    model: ModelConfig = ModelConfig()
    preference: PreferenceConfig = PreferenceConfig()
    base: BaseTierConfig = BaseTierConfig()
    lora: LoraConfig = LoraConfig()
    fusion: FusionConfig = FusionConfig()
    collaborative: CollaborativeConfig = CollaborativeConfig()
    graph: GraphConfig = GraphConfig()
    context: ContextConfig = ContextConfig()
    candidates: CandidateConfig = CandidateConfig()
    diversity: DiversityConfig = DiversityConfig()
    cold_start: ColdStartConfig = ColdStartConfig()
    serving: ServingConfig = ServingConfig()

    def with_overrides(self, overrides: dict[str, Any]) -> SonaConfig:
        """A copy with nested ``{"section": {"key": value}}`` overrides, validated."""
        merged = _deep_merge(self.model_dump(), overrides)
        return config_from_dict(merged)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "config") -> SonaConfig:
    """Validate a nested dict into a `SonaConfig`; raises `ConfigError` naming bad keys."""
    try:
        return SonaConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def read_toml(path: str | Path, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """The parsed TOML file; a missing or malformed file raises ``error`` naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{path}: not valid TOML: {problem}") from None


def load_config(path: str | Path | None = None) -> SonaConfig:
    """Load a TOML file (default: the packaged defaults) into a validated `SonaConfig`."""
    if path is None:
        return SonaConfig()
    return config_from_dict(read_toml(path), source=str(path))
