"""The one configuration object of cellfoundry: library, workers and service.

Every field is read from the environment as ``CELLFOUNDRY_<FIELD>`` (or from ``.env``);
``cellfoundry.paths`` derives the state folders from it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_WEB_DIST = Path(__file__).resolve().parents[2] / "web" / "dist"


class Settings(BaseSettings):
    """Settings; every field can be set as ``CELLFOUNDRY_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="CELLFOUNDRY_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    home: Path = Field(
        default_factory=lambda: Path.home() / ".cellfoundry",
        description="state folder (database, storage, local key)",
    )
    database_url: str = Field(
        "", description="SQLAlchemy URL; default sqlite:///$HOME/cellfoundry.db"
    )
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker (Redis) URL")
    queue_backend: Literal["local", "celery"] = "local"
    queue_name: str = "cellfoundry"
    storage_dir: Path | None = None
    upload_limit_mb: float = 4096.0
    preload_models: list[str] = Field(
        default_factory=list, description="model ids; empty = every ready model"
    )
    web_dir: Path | None = None
    local_workers: int = 1
    api_workers: int = Field(
        1,
        description="API processes of `cellfoundry serve` sharing its port (each preloads the "
        "models; local job workers and the reaper stay one per deployment)",
    )
    heartbeat_s: float = 5.0
    stale_after_s: float = 60.0
    max_attempts: int = 2
    poll_s: float = 0.5
    reaper_s: float = 5.0
    reaper_lease_s: float = Field(
        30.0, description="the reaper lease lasts this long unless renewed (one reaper at a time)"
    )
    redispatch_after_s: float = Field(
        300.0,
        description="re-send the message of a run or shard still queued after this long "
        "(lost by the broker, or by a crash between commit and dispatch); duplicates are no-ops",
    )
    shard_sweep_s: float = Field(
        600.0,
        description="the reaper looks this often for shard files left by ended runs "
        "(a worker that crashed before removing them) and removes them",
    )
    tmp_sweep_after_s: float = Field(
        21_600.0,
        description="the reaper removes upload leftovers in storage/tmp (a partial upload "
        "'*.part', an intake folder 'intake-*') untouched this long: what an API process killed "
        "mid-upload leaves (checked every shard_sweep_s). An upload whose client sends nothing "
        "this long is discarded (409 upload_expired); keep it above the intake's wall time "
        "(2 x intake_cpu_s)",
    )
    upload_idle_timeout_s: float = Field(
        300.0,
        ge=0,
        description="an upload whose client sends no data this long is refused (408 "
        "upload_idle) and what it had sent is removed at once, so a stalled or silent client "
        "cannot hold disk space or a connection; 0: no limit (then only the tmp sweep applies)",
    )
    db_retry_s: float = Field(
        30.0, description="workers retry database writes for this long when the connection drops"
    )
    shard_size: int = 50_000
    explain_max_cells: int = Field(
        1_000_000,
        description="cells an annotation may explain gene by gene (params.explain; 422 beyond)",
    )
    umap_max_cells: int = Field(
        5_000,
        description="points of the layout in GET /results (a sample stratified by label above "
        "this; GET /runs/{id}/layout serves every cell, binned when zoomed out)",
    )
    layout_fit_cells: int = Field(
        20_000,
        description="cells the 2-D layout (UMAP/PCA) is fitted on, stratified by label; every "
        "other cell is projected and placed by its nearest fitted cells, in chunks",
    )
    celery_visibility_timeout_s: int = 3600
    broker_timeout_s: float = 2.0
    key_cache_s: float = 10.0
    max_active_runs_per_user: int = Field(
        20, description="queued + running runs one user may have at once (0: no limit)"
    )
    upload_quota_mb: float = Field(
        102_400.0, description="total stored upload bytes per user, in MiB (0: no limit)"
    )
    predict_rate_per_s: float = Field(
        20_000.0,
        description="/predict requests per second per API key (a token bucket shared by the API "
        "processes: see predict_rate_url; 0: no limit)",
    )
    predict_rate_url: str = Field(
        "",
        description="Redis URL holding the /predict buckets, shared by API processes on every "
        "host; empty: a shared-memory file in HOME, shared by the API processes of one host",
    )
    predict_burst: int = Field(
        40_000, description="/predict requests one key may send at once before the rate applies"
    )
    demo_model: bool = True
    # uploads are opened first in a separate process under these limits (413 beyond them)
    intake_memory_mb: int = Field(
        6144, description="address space of the process opening an upload"
    )
    intake_cpu_s: int = Field(600, description="CPU seconds of that process (wall time: twice)")
    intake_max_cells: int = 20_000_000
    intake_max_genes: int = 500_000
    intake_max_columns: int = Field(100_000, description="columns of an uploaded CSV/TSV")
    intake_max_gzip_ratio: float = Field(200.0, description="decompressed / compressed size")
    max_body_kb: int = Field(
        1024, description="body of a JSON request other than /upload and /predict (413 beyond)"
    )
    max_header_kb: int = Field(
        64, ge=1, description="request line and headers of `cellfoundry serve` (431 beyond)"
    )
    head_timeout_s: float = Field(
        30.0, gt=0, description="time for a request's head to arrive (408 beyond)"
    )
    # /predict
    predict_max_body_mb: float = Field(10.0, description="request body size (413 beyond)")
    predict_max_cells: int = Field(10_000, description="cells per request (413 beyond)")
    predict_max_genes: int = Field(100_000, description="distinct gene names per request (422)")

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        self.home = Path(self.home).expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'cellfoundry.db'}"
        if self.storage_dir is None:
            self.storage_dir = self.home / "storage"
        if self.web_dir is None and REPO_WEB_DIST.is_dir():
            self.web_dir = REPO_WEB_DIST
        return self

    @property
    def upload_limit_bytes(self) -> int:
        return int(self.upload_limit_mb * 1024 * 1024)

    @property
    def upload_quota_bytes(self) -> int:
        return int(self.upload_quota_mb * 1024 * 1024)

    @property
    def storage(self) -> Path:
        assert self.storage_dir is not None
        return Path(self.storage_dir)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once)."""
    return Settings()  # type: ignore[call-arg]
