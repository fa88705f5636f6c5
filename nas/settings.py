"""Service settings: one `SERNAS_` prefix, defaults that make the first run work unconfigured."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERNAS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".sernas"), description="database, search results and feature cache")
    database_url: str | None = Field(None, description="default: a SQLite file in data_dir")
    ray_address: str | None = Field(None, description="join this Ray cluster; default: start a local Ray")
    data_roots: list[Path] = Field(
        default_factory=lambda: [Path(".")], description="corpus folders must lie under one of these"
    )
    api_token: SecretStr | None = Field(None, description="when set, writes need 'Authorization: Bearer <it>'")
    max_body_bytes: int = Field(1_000_000, ge=1024)
    lease_seconds: float = Field(30.0, gt=0, description="a search whose worker is silent this long is re-queued")
    poll_seconds: float = Field(1.0, gt=0, description="how often the dispatcher looks for queued searches")
    max_attempts: int = Field(5, ge=1, description="a search whose worker died this often is marked failed")
    max_running: int = Field(1, ge=1, description="searches run at once by one dispatcher")
    dispatcher: bool = Field(True, description="`sernas serve` also runs the dispatcher")
    autoscale_node: dict[str, float] = Field(
        default_factory=dict,
        description='Ray resources of the largest node the cluster may still add, e.g. {"GPU": 1, "CPU": 8} '
        "for an autoscaling cluster's GPU node type: a search asking for them waits for that node instead of "
        "being refused",
    )

    @property
    def db_url(self) -> str:
        from nas.store.db import default_url

        return self.database_url or default_url(self.data_dir)

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "searches"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "features"
