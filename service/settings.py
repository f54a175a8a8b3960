"""What `sona serve` decides before the app starts: the engine config, the serving settings
(the ``[serving]`` table of the same TOML file), storage and cache URLs, keys and demo options.

Serving settings never reach the engine's config: changing the port or the batch window
compiles nothing. The padded sizes the engine compiles for (`ServingSettings.served_shapes`)
go to it as one `ServedShapes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sona_jax.config import ConfigError, SonaConfig, format_errors
from sona_jax.serve.programs import ServedShapes
from sona_lab.files import read_toml, split_config


class _HostTable(BaseModel):
    """A host table of the config file (``[serving]``, ``[learning]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: ClassVar[str]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None):
        """Validated settings; raises `ConfigError` naming bad keys (``serving.port``)."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(format_errors(error, f"{source or cls.table}: {cls.table}")) from None


class ServingSettings(_HostTable):
    """SPEC 5 serving: the HTTP server, micro-batching, limits, caches."""

    table: ClassVar[str] = "serving"

    host: str = "127.0.0.1"
    port: int = Field(8082, ge=1, le=65535)
    batch_window_ms: float = Field(1.0, ge=0.0, le=1000.0)
    max_batch: int = Field(128, ge=1, le=128)
    engine_threads: int = Field(
        1, ge=1, le=64, description="engine calls in flight at once (per batcher)"
    )
    xla_threads: int = Field(
        1,
        ge=0,
        le=1024,
        description="threads XLA's CPU runtime runs engine calls on (0: one per core)",
    )
    gil_switch_ms: float = Field(
        0.5,
        gt=0.0,
        le=100.0,
        description="longest a thread holds the GIL while another waits (Python's default: 5)",
    )
    demote_compiler_threads: bool = Field(
        True,
        description="run XLA's compiler threads at the lowest CPU priority, so a background "
        "compile (a capacity step, a new model version) never takes cores from serving",
    )
    max_queue: int = Field(1024, ge=1)
    max_wait_ms: float = Field(
        250.0, ge=0.0, description="longest a request may wait for the engine (0: no limit)"
    )
    batching: bool = True
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_json_depth: int = Field(
        16, ge=4, le=256, description="deepest JSON nesting a body may have (ours need 4)"
    )
    max_events_per_update: int = Field(1000, ge=1)
    max_batch_score_ids: int = Field(1000, ge=1)
    default_limit: int = Field(20, ge=1, le=100, description="list length when none is asked")
    recommendation_ttl_seconds: int = Field(300, ge=0)
    profile_ttl_seconds: float = Field(3600.0, gt=0.0)
    cache_max_entries: int = Field(100_000, ge=1)
    warm_up: bool = Field(True, description="compile every request shape before serving")
    compilation_cache: bool = Field(
        True, description="keep compiled programs under the data directory (fast restarts)"
    )
    compilation_cache_dir: str = Field(
        "",
        description="where compiled programs are kept ('': xla-cache under the data directory); "
        "servers of one host can share one (`sona serve --compilation-cache-dir`)",
    )
    batch_sizes: tuple[int, ...] = Field(
        (1, 4, 8, 16, 32, 64),
        min_length=1,
        description="viewers per engine call, ascending: a batch is padded to the next size, "
        "more than the largest go in several calls (each size is compiled programs)",
    )
    score_width: int = Field(
        8, ge=1, description="items per score row (a request with more spans several rows)"
    )
    profile_events: int = Field(
        512, ge=1, description="stored events per step when a viewer's profile is built"
    )
    learner_users: int = Field(16, ge=1, description="viewers per adapter-training call")
    prepare_next_capacity: bool = Field(
        True,
        description="compile the programs of the catalogue's next capacity in the background, "
        "before a write needs it (one more program set held)",
    )
    capacity_rate_window_seconds: float = Field(
        60.0,
        gt=0.0,
        description="the catalogue's growth rate (rows/s) is measured over this window, and "
        "over at least a twelfth of it",
    )
    capacity_compile_guess_seconds: float = Field(
        60.0,
        gt=0.0,
        description="how long a capacity's programs take to compile in the background, until "
        "one has been timed",
    )
    compilation_cache_mb: int = Field(
        1024,
        ge=1,
        description="largest the XLA compilation cache may grow on disk (least recently used "
        "entries go first; every capacity step adds a set)",
    )
    saved_programs: int = Field(
        32,
        ge=0,
        description="compiled program sets kept on disk for restarts (0: none saved)",
    )
    compile_in_child: bool = Field(
        True,
        description="compile the catalogue's next capacity in a child process at the lowest "
        "priority, then load its saved programs (needs saved_programs > 0): tracing in the "
        "serving process slowed serving batches 20-50 fold meanwhile",
    )
    compile_child_timeout_seconds: float = Field(
        900.0, gt=0.0, description="longest a compile child may run before it is ended"
    )
    learner_max_batch: int = Field(64, ge=1, le=1024, description="viewers trained together")
    learner_window_ms: float = Field(50.0, ge=0.0, description="how long the learner gathers")
    model_poll_seconds: float = Field(10.0, gt=0.0, description="how often to look for models")
    catalogue_poll_seconds: float = Field(
        1.0, gt=0.0, description="how often to apply catalogue writes of other processes"
    )
    tables_refresh_seconds: float = Field(
        2.0, gt=0.0, description="how often popularity and context tables take in new events"
    )
    experiments_poll_seconds: float = Field(
        2.0, gt=0.0, description="how often to read experiments written by other processes"
    )
    exposure_flush_seconds: float = Field(
        1.0, gt=0.0, description="how often lists shown in experiments are written"
    )
    max_variant_models: int = Field(
        2,
        ge=0,
        le=8,
        description="model versions that may serve experiment variants at once besides the "
        "default (each holds its arrays and may compile programs of its own)",
    )
    experiment_completed_at: float = Field(
        0.9, ge=0.0, le=1.0, description="completion at which a view counts as completed"
    )
    swap_prepared_profiles: int = Field(
        1000, ge=0, description="recent viewers whose profiles a model swap rebuilds first"
    )
    candidate_cache_entries: int = Field(
        20_000,
        ge=0,
        description="viewers whose retrieved candidates this process keeps (about 13 KB each, 16 "
        "with a transformer; "
        "0: retrieve on every request)",
    )
    candidate_max_age_seconds: float = Field(
        60.0, gt=0.0, description="longest a viewer's candidates are kept (trending moves)"
    )
    canned_engine: bool = Field(
        False,
        description="benchmark ceiling only: every recommend / score batch is answered with "
        "one precomputed result of the same shape (validation, profiles, batching and answers "
        "stay real); never for production",
    )

    @field_validator("batch_sizes")
    @classmethod
    def _ascending(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
            raise ValueError("distinct sizes >= 1 in ascending order")
        return sizes

    def served_shapes(self) -> ServedShapes:
        """The padded sizes the served engine compiles its programs for."""
        # Sizes a batch of at most max_batch never pads to are not compiled.
        largest = self.max_batch if self.batching else 1
        sizes = tuple(s for s in self.batch_sizes if s < largest)
        sizes += tuple(s for s in self.batch_sizes if s >= largest)[:1] or ()
        return ServedShapes(
            sizes,
            min(self.score_width, self.max_batch_score_ids),
            self.profile_events,
            self.learner_users,
        )


class LearningSettings(_HostTable):
    """SPEC 4.2: rebuilding the model from the store (the ``[learning]`` table)."""

    table: ClassVar[str] = "learning"

    rebuild_interval_seconds: float = Field(
        0.0, ge=0.0, description="how often to consider a rebuild (0: never on a schedule)"
    )
    rebuild_min_events: int = Field(
        1000, ge=0, description="events that must have arrived since the model to rebuild"
    )
    keep_versions: int = Field(3, ge=1, description="model versions kept in the store")
    trainer_timeout_seconds: float = Field(3600.0, gt=0.0, description="a rebuild's longest run")


class HostConfig(NamedTuple):
    """One TOML file as its three readers see it."""

    config: SonaConfig
    serving: ServingSettings
    learning: LearningSettings


def load_config_file(path: str | Path | None) -> HostConfig:
    """The engine config, serving and learning settings of one TOML file (defaults without)."""
    if path is None:
        return HostConfig(SonaConfig(), ServingSettings(), LearningSettings())
    config, host = split_config(read_toml(path), str(path))
    return HostConfig(
        config,
        ServingSettings.from_dict(host.get("serving", {}), str(path)),
        LearningSettings.from_dict(host.get("learning", {}), str(path)),
    )


@dataclass
class Settings:
    """Everything `sona serve` decides before the app starts."""

    config: SonaConfig = field(default_factory=SonaConfig)
    serving: ServingSettings = field(default_factory=ServingSettings)
    learning: LearningSettings = field(default_factory=LearningSettings)
    data_dir: Path = Path("sona-data")
    database_url: str | None = None
    redis_url: str | None = None
    api_keys: frozenset[str] = frozenset()
    admin_keys: frozenset[str] = frozenset()
    demo: str | None = None  # "synthetic" | "ml-100k" | None
    demo_path: str | None = None
    demo_users: int = 2_000
    demo_items: int = 3_000

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"
