"""All of koubo's settings in one typed object: `koubo.toml`, then `KOUBO_*` environment variables.

Environment wins over the file. The file is `./koubo.toml` unless `KOUBO_CONFIG` names another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KOUBO_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="uploads/, outputs/, cache/, logs/, koubo.db live here")

    # Service. 127.0.0.1 unless told otherwise: another address without auth gets a loud warning.
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)
    links_port: int = Field(7861, ge=1, le=65535)
    # The link server's address as downloaders reach it (a proxy or another host name); the
    # default is http://<host>:<links_port>.
    links_base_url: str | None = None
    link_lifetime: float = Field(7 * 24 * 3600.0, ge=0, description="seconds a signed link lasts; 0 = never expires")
    max_concurrent: int = Field(1, ge=1, le=64, description="jobs rendered at the same time")
    task_timeout: float = Field(1800.0, gt=0, description="seconds before a running job is stopped")
    upload_max_bytes: int = Field(2 * 1024**3, gt=0)
    # Huey's storage and the job database: SQLite files under data_dir unless URLs are given
    # (redis://... and postgresql://... for several machines).
    queue_url: str | None = None
    database_url: str | None = None
    htpasswd_file: Path | None = Field(None, description="Apache htpasswd (bcrypt) file: enables HTTP Basic auth")
    log_file: Path | None = Field(None, description="default <data_dir>/logs/koubo.log")

    # Input limits, checked when a file is probed.
    max_audio_seconds: float = Field(1800.0, gt=0)
    max_video_seconds: float = Field(1800.0, gt=0)

    # Output encoding (libx264).
    video_crf: int = Field(20, ge=0, le=51)
    video_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
    ] = "veryfast"

    # Generation.
    engine: str = "classic"
    expressiveness: float = Field(1.0, ge=0.0, le=2.0, description="scale of mouth movement")
    face_select: Literal["largest", "central"] = "largest"
    max_faces: int = Field(4, ge=1, le=10)

    # Feature caches: this many entries of each kind stay in memory; the disk copy has no limit
    # (retention cleans it).
    cache_memory_entries: int = Field(16, ge=0)

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def queue_location(self) -> str:
        return self.queue_url or f"sqlite:///{(self.data_dir / 'queue.db').resolve()}"

    @property
    def database_location(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'koubo.db').resolve()}"

    @property
    def links_base(self) -> str:
        """The signed links' base URL, without a trailing slash."""
        return (self.links_base_url or f"http://{self.host}:{self.links_port}").rstrip("/")

    @property
    def log_path(self) -> Path:
        return self.log_file or self.data_dir / "logs" / "koubo.log"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("KOUBO_CONFIG", "koubo.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)
