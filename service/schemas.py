"""Request and response models (pydantic): validation and the OpenAPI document come from here.

Field names are SPEC 5's exactly; existing callers send them unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from sona_jax.serve.recommend import KIND_NAMES

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]  # SPEC 5: NaN / Infinity -> 400

# Any short word: the engine uses the ones it knows (tv, mobile, desktop, tablet; morning,
# afternoon, evening, night; uplifting, dark, relaxing, tense, funny, romantic) and answers
# which it ignored (`service.context`).
ContextWord = Annotated[str, StringConstraints(min_length=1, max_length=64)]


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


class RecommendationRequest(_Strict):
    user_id: UUID
    context: Context | None = None
    limit: int | None = Field(
        None, ge=1, le=100, description="list length; default serving.default_limit (20)"
    )
    exclude_watched: bool = True
    diversity_threshold: float | None = Field(
        None, ge=0.0, le=1.0, allow_inf_nan=False, description="1 − λ of MMR"
    )


class Recommendation(_Strict):
    content_id: str
    confidence_score: float
    recommendation_type: Literal[KIND_NAMES] = Field(  # type: ignore[valid-type]
        description="the source that contributed most; new_content: an item added since the "
        "model, offered to viewers whose taste it fits"
    )
    based_on: list[str]
    explanation: str


class RecommendationResponse(_Strict):
    recommendations: list[Recommendation]
    generated_at: datetime
    ttl_seconds: int
    ignored_context: dict[str, str] | None = Field(
        None, description="context words the engine does not know (present only when some are)"
    )


class SimilarRequest(_Strict):
    content_id: UUID
    limit: int = Field(10, ge=1, le=100)


class SimilarItem(_Strict):
    content_id: str
    similarity: float
    title: str


class SimilarResponse(_Strict):
    similar_content: list[SimilarItem]


class ScoreRequest(_Strict):
    user_id: UUID
    content_id: UUID
    context: Context | None = None


class ScoreComponents(_Strict):
    collaborative: float
    content_based: float
    graph_based: float
    context: float
    lora_boost: float


class ScoreResponse(_Strict):
    user_id: str
    content_id: str
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


class BatchScoreItem(_Strict):
    content_id: str
    score: float
    components: ScoreComponents


class BatchScoreResponse(_Strict):
    user_id: str
    scores: list[BatchScoreItem]
    unknown_content_ids: list[str]


class ViewingEvent(_Strict):
    content_id: UUID
    timestamp: datetime
    completion_rate: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    rating: int | None = Field(None, ge=1, le=5)
    is_rewatch: bool = False
    dismissed: bool = False
    device_type: ContextWord | None = None
    time_of_day: ContextWord | None = Field(
        None, description="binned by the timestamp's hour (UTC) when absent or unknown"
    )

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
    user_id: str
    events_processed: int
    events_new: int
    interaction_count: int
    training_scheduled: bool


class TrainRequest(_Strict):
    user_id: UUID
    force: bool = False


class TrainResponse(_Strict):
    status: Literal["training_completed"]
    user_id: str
    duration_ms: float
    training_iterations: int
    events_used: int
    loss: float


class ContentItem(_Strict):
    content_id: UUID
    title: str = Field(min_length=1, max_length=500)
    genres: list[str] = Field(default_factory=list, max_length=32)
    duration_minutes: float | None = Field(None, ge=0, le=100_000, allow_inf_nan=False)
    release_year: int | None = Field(None, ge=1800, le=2200)
    moods: list[str] = Field(default_factory=list, max_length=16)
    series_id: str | None = Field(None, max_length=128)
    embedding: list[FiniteFloat] | None = Field(None, max_length=4096)


class ContentUpsertRequest(_Strict):
    items: list[ContentItem] = Field(min_length=1, max_length=1000)


class ContentUpsertResponse(_Strict):
    status: Literal["upserted"]
    count: int


class ContentListQuery(_Strict):
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=64)


class ContentListResponse(_Strict):
    items: list[ContentItem]
    next_cursor: str | None


class ErrorResponse(_Strict):
    error: str
    message: str
    details: list | dict | None = None


class HealthResponse(_Strict):
    status: str
    service: str
    version: str
