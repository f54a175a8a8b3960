"""Request and response models (pydantic): validation and the OpenAPI document come from here.

Field names are SPEC 5's exactly; existing callers send them unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
)

from sona_jax.serve.fusion import KIND_NAMES

EMBEDDING_BOUND = 1e6  # |value| of a supplied embedding: float32-safe once squared and summed
STORABLE = r"^[^\u0000]*$"  # PostgreSQL text cannot hold NUL (refused by `_storable`; pydantic
# refuses lone surrogates itself)


def _json_integer(value: object) -> object:
    """JSON Schema's integer: 5 and 5.0, never `true` or "5"."""
    if type(value) is int or (type(value) is float and value.is_integer()):
        return int(value)
    raise ValueError("must be an integer")


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


def integer(ge: int, le: int):
    """An integer field in [ge, le] (bounds first, so the document states them)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_json_integer)]


def text(max_length: int, min_length: int = 0):
    """A string the stores can hold, of at most ``max_length`` characters."""
    return Annotated[
        str,
        Field(
            min_length=min_length, max_length=max_length, json_schema_extra={"pattern": STORABLE}
        ),
        AfterValidator(_storable),
    ]


# Numbers are JSON numbers: `true` is not 1 and "5" is not 5, and never NaN / Infinity
# (SPEC 5: -> 400). Flags are JSON booleans only.
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Flag = Annotated[bool, Strict()]

# Any short word: the engine uses the ones it knows (tv, mobile, desktop, tablet; morning,
# afternoon, evening, night; uplifting, dark, relaxing, tense, funny, romantic) and answers
# which it ignored (`service.answers.context`).
ContextWord = text(64, min_length=1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", ser_json_inf_nan="null")


class Context(_Strict):
    device_type: ContextWord | None = Field(None, description="tv, mobile, desktop, tablet, ...")
    time_of_day: ContextWord | None = Field(
        None, description="morning, afternoon, evening, night, ..."
    )
    mood: ContextWord | None = Field(
        None, description="uplifting, dark, relaxing, tense, funny, romantic, ..."
    )
    viewing_with: ContextWord | None = None


class Filters(_Strict):
    """Which items a list may hold; unknown fields are refused, not ignored. Bounds
    are inclusive; a minimum above its maximum lets nothing through."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null")

    exclude_content_ids: list[UUID] = Field(
        default_factory=list,
        max_length=100,
        description="at most 100, and at most filters.max_excluded_ids when that is lower",
    )
    genres_any: list[text(64)] = Field(
        default_factory=list, max_length=64, description="at least one of these genres"
    )
    genres_none: list[text(64)] = Field(
        default_factory=list, max_length=64, description="none of these genres"
    )
    release_year_min: integer(1800, 2200) | None = None
    release_year_max: integer(1800, 2200) | None = None
    duration_min: Number | None = Field(None, ge=0, le=100_000, description="minutes")
    duration_max: Number | None = Field(None, ge=0, le=100_000, description="minutes")
    one_per_series: Flag = Field(False, description="at most one item of each series")


class RecommendationRequest(_Strict):
    user_id: UUID
    context: Context | None = None
    limit: integer(1, 100) | None = Field(
        None, description="list length; default serving.default_limit (20)"
    )
    exclude_watched: Flag = True
    diversity_threshold: Number | None = Field(None, ge=0.0, le=1.0, description="1 − λ of MMR")
    filters: Filters | None = None


class Recommendation(_Strict):
    content_id: UUID
    confidence_score: float
    recommendation_type: Literal[KIND_NAMES] = Field(  # type: ignore[valid-type]
        description="the source that contributed most; new_content: an item added since the "
        "model, offered to viewers whose taste it fits"
    )
    based_on: list[str]
    explanation: str


class ExperimentArm(_Strict):
    experiment: str = Field(description="the experiment's id")
    variant: str


class RecommendationResponse(_Strict):
    recommendation_id: UUID = Field(
        description="this list's id: send it back on viewing events that come from it"
    )
    recommendations: list[Recommendation]
    generated_at: datetime
    ttl_seconds: int
    experiment: str | None = Field(
        None, description="the running experiment (id) that served this viewer, if any"
    )
    variant: str | None = Field(None, description="its variant serving this viewer")
    experiments: list[ExperimentArm] | None = Field(
        None, description="every running experiment the viewer is in, oldest first"
    )
    ignored_context: dict[str, str] | None = Field(
        None, description="context words the engine does not know (present only when some are)"
    )
    ignored_filters: dict[str, list[str]] | None = Field(
        None, description="filter genres the model does not know (present only when some are)"
    )


class SimilarRequest(_Strict):
    content_id: UUID
    limit: integer(1, 100) = 10
    filters: Filters | None = None


class SimilarItem(_Strict):
    content_id: UUID
    similarity: float
    title: str


class SimilarResponse(_Strict):
    similar_content: list[SimilarItem]
    ignored_filters: dict[str, list[str]] | None = Field(
        None, description="filter genres the model does not know (present only when some are)"
    )


class ScoreRequest(_Strict):
    user_id: UUID
    content_id: UUID
    context: Context | None = None


class ScoreComponents(_Strict):
    collaborative: float
    content_based: float
    graph_based: float
    sequential: float = Field(description="next-watch transitions (0 while its weight is 0)")
    transformer: float = Field(
        description="the self-attentive sequence model (0 while its weight is 0 or the model "
        "has none)"
    )
    context: float
    lora_boost: float


class ScoreResponse(_Strict):
    user_id: UUID
    content_id: UUID
    score: float
    components: ScoreComponents
    ignored_context: dict[str, str] | None = Field(
        None, description="context words the engine does not know (present only when some are)"
    )


class BatchScoreRequest(_Strict):
    user_id: UUID
    content_ids: list[UUID] = Field(
        min_length=1, description="at most serving.max_batch_score_ids (1,000 by default)"
    )
    context: Context | None = None
    filters: Filters | None = Field(
        None,
        description="items a filter refuses are not scored: listed in filtered_content_ids "
        "(one_per_series does not apply to scores)",
    )


class BatchScoreItem(_Strict):
    content_id: UUID
    score: float
    components: ScoreComponents


class BatchScoreResponse(_Strict):
    user_id: UUID
    scores: list[BatchScoreItem]
    unknown_content_ids: list[UUID]
    filtered_content_ids: list[UUID] = Field(
        default_factory=list, description="known items the request's filters refused"
    )
    ignored_filters: dict[str, list[str]] | None = Field(
        None, description="filter genres the model does not know (present only when some are)"
    )


class ViewingEvent(_Strict):
    content_id: UUID
    timestamp: datetime = Field(description="ISO 8601; UTC when no offset is given")
    completion_rate: Number = Field(ge=0.0, le=1.0)
    rating: integer(1, 5) | None = None
    is_rewatch: Flag = False
    dismissed: Flag = False
    device_type: ContextWord | None = None
    time_of_day: ContextWord | None = Field(
        None, description="binned by the timestamp's hour (UTC) when absent or unknown"
    )
    recommendation_id: UUID | None = Field(
        None, description="the list the viewer watched it from (experiments' attribution)"
    )

    @field_validator("timestamp", mode="before")
    @classmethod
    def _iso_8601(cls, value: object) -> object:
        if not isinstance(value, str):  # not a Unix time: 0 would be 1970, silently
            raise ValueError("must be an ISO 8601 string, e.g. 2026-10-01T21:00:00Z")
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc_when_naive(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class ProfileUpdateRequest(_Strict):
    user_id: UUID
    viewing_events: list[ViewingEvent] = Field(
        min_length=1, description="at most serving.max_events_per_update (1,000 by default)"
    )


class ProfileUpdateResponse(_Strict):
    status: Literal["updated"]
    user_id: UUID
    events_processed: int
    events_new: int
    interaction_count: int
    training_scheduled: bool


class TrainRequest(_Strict):
    user_id: UUID
    force: Flag = False


class TrainResponse(_Strict):
    status: Literal["training_completed"]
    user_id: UUID
    duration_ms: float
    training_iterations: int
    events_used: int
    loss: float


class ContentItem(_Strict):
    content_id: UUID
    title: text(500, min_length=1)
    genres: list[text(64)] = Field(default_factory=list, max_length=32)
    duration_minutes: Number | None = Field(None, ge=0, le=100_000)
    release_year: integer(1800, 2200) | None = None
    moods: list[text(64)] = Field(default_factory=list, max_length=16)
    series_id: text(128) | None = None
    embedding: list[Annotated[Number, Field(ge=-EMBEDDING_BOUND, le=EMBEDDING_BOUND)]] | None = (
        Field(
            None, description="exactly model.embedding_dim values (the document states the length)"
        )
    )


class ContentUpsertRequest(_Strict):
    items: list[ContentItem] = Field(min_length=1, max_length=1000)


class ContentUpsertResponse(_Strict):
    status: Literal["upserted"]
    count: int


class ContentListQuery(_Strict):
    limit: int = Field(50, ge=1, le=500)  # a query string: digits, converted
    cursor: UUID | None = Field(None, description="next_cursor of the previous page")


class ContentListResponse(_Strict):
    items: list[ContentItem]
    next_cursor: UUID | None


class ErrorResponse(_Strict):
    error: str
    message: str
    details: list | dict | None = None


class HealthResponse(_Strict):
    status: str
    service: str
    version: str


ExperimentStatus = Literal["running", "paused", "stopped", "shipped"]


class VariantSpec(_Strict):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null")

    name: text(64, min_length=1)
    traffic: Number = Field(gt=0.0, le=1.0, description="share of viewers; shares sum to 1")
    config: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="a config fragment: fusion weights and gates, diversity.mmr_lambda, "
        "cold_start's min_events, blend_events, exploration_floor, exploration_start, "
        "exploration_decay and genre_strength "
        '(e.g. {"fusion": {"graph_based": 0.5}}); empty: the served default',
    )
    model_version: int | None = Field(
        None,
        ge=1,
        description="a stored model version this variant serves (default: the served one); "
        "shipping the variant makes it the served default until the experiment is stopped",
    )


class ExperimentRequest(_Strict):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null")

    name: text(128, min_length=1)
    variants: list[VariantSpec] = Field(
        min_length=2, max_length=10, description="the first is the control"
    )
    metric: Literal["click_through", "completion"] = Field(
        "click_through",
        description="a viewer converts when they watch a listed item (click_through) or "
        "watch one to serving.experiment_completed_at (completion)",
    )
    attribution_window_minutes: Number = Field(
        1440.0, gt=0.0, le=43200.0, description="views of a listed item this long after count"
    )
    relative_effect: Number = Field(
        0.1, gt=0.0, le=10.0, description="the relative lift the sequential test is tuned for"
    )
    expected_rate: Number | None = Field(
        None, gt=0.0, lt=1.0, description="control's expected rate (default: as observed)"
    )
    status: Literal["running", "paused"] = "running"


class ExperimentStatusRequest(_Strict):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null")

    status: ExperimentStatus
    variant: text(64, min_length=1) | None = Field(None, description="the variant to ship")
