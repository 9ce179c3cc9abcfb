"""All of koubo's settings in one typed object: `koubo.toml`, then `KOUBO_*` environment variables.

Environment wins over the file. The file is `./koubo.toml` unless `KOUBO_CONFIG` names another.
A process that `koubo serve` starts gets all of its parent's settings at once, as JSON in
KOUBO_SETTINGS_JSON (child_environment), which wins over both.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from koubo import errors
from koubo.options import Crf, DenoiseMode, Expressiveness, Preset

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
_SIZE_UNITS = "kmgtp"
# The whole Settings object of the parent process, as JSON: lists and None survive, which
# one variable per setting (str(value)) could not carry.
SETTINGS_JSON_VARIABLE = "KOUBO_SETTINGS_JSON"


def parse_size(text: str) -> int:
    """Bytes from "50G", "512M", "2GiB", "1.5T" or "1000" (binary units, as df -h and du -h count)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size: use bytes or a number with K, M, G, T or P (e.g. 50G)")
    number, unit = match.groups()
    return int(float(number) * 1024 ** (_SIZE_UNITS.index(unit.lower()) + 1 if unit else 0))


# A byte count that may also be written "50G" (in koubo.toml, KOUBO_* variables and on the command line).
Size = Annotated[int, BeforeValidator(lambda value: parse_size(value) if isinstance(value, str) else value)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KOUBO_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="uploads/, outputs/, cache/, logs/, koubo.db live here")
    # Where uploads/ and outputs/ live instead: a folder every machine mounts (NFS, SMB) when
    # workers run on several machines (docs/deployment.md).
    storage_dir: Path | None = None

    # Service. 127.0.0.1 unless told otherwise: another address without auth gets a loud warning.
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)
    links_port: int = Field(7861, ge=1, le=65535)
    # The link server's address as downloaders reach it (a proxy or another host name); the
    # default is http://<host>:<links_port>.
    links_base_url: str | None = None
    link_lifetime: float = Field(7 * 24 * 3600.0, ge=0, description="seconds a signed link lasts; 0 = never expires")
    # The link server's options. Listing every finished video at /downloads/ needs htpasswd_file.
    links_listing: bool = False
    links_accel_redirect: str | None = Field(
        None,
        description="behind nginx: an internal location mapped to outputs/ (e.g. /_koubo_outputs); koubo "
        "checks each link and nginx sends the bytes (X-Accel-Redirect)",
    )
    links_rate_limit: int | None = Field(None, gt=0, description="bytes per second per download connection")
    links_max_per_ip: int | None = Field(None, gt=0, description="concurrent downloads per client address")
    # Bandwidth you can plan for (koubo/links/egress.py): a total cap shared fairly by all downloads
    # of one link server, and how many times one link may be downloaded (from byte 0; resumes and
    # the parts of a multi-connection download do not count again).
    links_egress_cap: int | None = Field(None, gt=0, description="bytes per second for all downloads together")
    links_downloads_per_link: int | None = Field(None, gt=0, description="downloads one job's link allows")
    links_trusted_proxies: list[str] = Field(
        default_factory=list, description="proxy addresses whose X-Forwarded-For names the real client"
    )
    max_concurrent: int = Field(1, ge=1, le=64, description="jobs rendered at the same time")
    # Each worker slot keeps one generation process for job after job (models loaded once, caches
    # kept); it is replaced by a fresh one after this many jobs, or once its resident memory is above
    # generation_max_rss after a job, so that what jobs leave behind cannot grow without bound.
    generation_max_jobs: int = Field(100, ge=1)
    generation_max_rss: Size = Field(4 * 1024**3, gt=0)
    # Background noise out of the speech (koubo/features/denoise.py): for the mouth only, or for the
    # output's sound track too. Each job may choose otherwise.
    denoise: DenoiseMode = "off"
    queue_high_burst: int = Field(
        3, ge=1, le=1000, description="high-priority (single) jobs started in a row before a waiting batch item"
    )
    task_timeout: float = Field(1800.0, gt=0, description="seconds before a running job is stopped")
    upload_max_bytes: int = Field(2 * 1024**3, gt=0)
    # Huey's storage and the job database: SQLite files under data_dir unless URLs are given
    # (redis://... and postgresql://... for several machines).
    queue_url: str | None = None
    database_url: str | None = None
    # This machine's consumer (`koubo worker`): its name in the workers panel (default host:pid), the
    # engines it offers (comma-separated; default all) and how long a worker may stay silent before
    # its jobs are taken back.
    worker_name: str | None = None
    worker_engines: str | None = None
    worker_timeout: float = Field(60.0, gt=0)
    worker_forget_after: float = Field(
        3600.0, gt=0, description="seconds after its last heartbeat that a gone worker leaves the Workers panel"
    )
    htpasswd_file: Path | None = Field(None, description="Apache/nginx htpasswd file: enables HTTP Basic auth")
    # Password guessing: after login_max_failures wrong passwords in a row, an address waits
    # login_backoff seconds (429 + Retry-After), doubled after each further failure up to login_backoff_max.
    login_max_failures: int = Field(5, ge=1)
    login_backoff: float = Field(1.0, gt=0)
    login_backoff_max: float = Field(600.0, gt=0)
    # Slow clients, on both servers: a request's headers must arrive within this many seconds (after
    # connecting or after the last answer), and its body may not pause longer than this between two
    # pieces; the connection is dropped (408 for a body) otherwise.
    http_header_timeout: float = Field(10.0, gt=0)
    # Largest request body other than an upload (JSON of the API and the UI's calls); uploads have
    # upload_max_bytes.
    request_max_bytes: Size = Field(1024**2, gt=0)
    log_file: Path | None = Field(None, description="default <data_dir>/logs/koubo.log")

    # Input limits, checked when a file is probed.
    max_audio_seconds: float = Field(1800.0, gt=0)
    max_video_seconds: float = Field(1800.0, gt=0)
    # What one job may decode and render, checked from the probe before any frame is decoded: a
    # 29 KB file can hold a hundred 4K frames (2.4 GB as RGB). The pixel budget counts
    # width x height x frames, of the template and of the output each; the default is 10 minutes of
    # 1080p at 25 fps (about 93 GB of frames).
    max_video_width: int = Field(3840, gt=0)
    max_video_height: int = Field(3840, gt=0)
    max_job_pixels: int = Field(1920 * 1080 * 25 * 600, gt=0)

    # Output encoding (libx264), chosen with bench/encode.py: on a real 512x512 talking head CRF 18
    # keeps the encoder's luma loss above 40 dB (CRF 20: 39.6) for 1.4x the bytes; slower presets
    # gain 0.3-0.5 dB at equal size there (0.1 dB at most on smooth 1080p/4K) for 1.6-3.8x the
    # encode time, which a CPU-only machine's real-time factor cannot spare.
    video_crf: Crf = 18
    video_preset: Preset = "veryfast"
    # H.264 through NVENC (an NVIDIA GPU's encoder; PyAV's wheels carry h264_nvenc) or libx264. auto
    # tries NVENC and falls back to libx264 silently where it does not open (no GPU, or a GPU
    # without NVENC such as H100/H200); nvenc falls back too, with a warning in the log.
    video_encoder: Literal["auto", "libx264", "nvenc"] = "auto"

    # Generation.
    engine: str = "classic"
    expressiveness: Expressiveness = Field(1.0, description="scale of mouth movement")
    face_select: Literal["largest", "central"] = "largest"
    max_faces: int = Field(4, ge=1, le=10)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where neural engines run: auto = CUDA when present, else CPU"
    )
    models_dir: Path | None = Field(None, description="user-supplied model weights; default <data_dir>/models")
    wav2lip_checkpoint: str = Field(
        "wav2lip_gan.pth", description="Wav2Lip checkpoint: a file name inside models_dir, or an absolute path"
    )

    # Feature caches, keyed by content (a file's sha256): this many entries of each kind stay in memory; the disk copy has no limit
    # (retention cleans it).
    cache_memory_entries: int = Field(16, ge=0)
    # ...and no more than this many bytes of them in all, least recently used out first: a warm
    # generation process keeps its cache from job to job.
    cache_memory_bytes: Size = Field(512 * 1024**2, ge=0)
    # A job keeps its template's decoded frames (RGB) when they all fit in this many bytes, so
    # tracking, the trust check and the looped rendering decode each frame once (an 8 s 512x512
    # template is 157 MB); a larger one is decoded again for each pass. 0: never kept.
    template_memory_bytes: Size = Field(256 * 1024**2, ge=0)

    # Retention (koubo/ops/retention.py): finished videos older than retention_days, or the oldest
    # beyond retention_max_bytes in all, are deleted; their jobs stay in the history as "expired".
    # Unset (or 0) keeps everything. `koubo serve` cleans every retention_interval seconds.
    retention_days: float | None = Field(None, ge=0)
    retention_max_bytes: Size | None = Field(None, ge=0)
    retention_interval: float = Field(3600.0, gt=0)
    # New jobs and uploads are refused while the outputs folder's disk has less free space (0 = never).
    min_free_bytes: Size = Field(1024**3, ge=0)
    # A running job stops (fails as disk_full) when its disk falls below this while it writes frames.
    job_min_free_bytes: Size = Field(256 * 1024**2, ge=0)

    # Webhooks (koubo/ops/notify.py): a POST when a job is done, failed or timed out.
    webhook_url: str | None = None
    webhook_format: Literal["json", "wecom", "dingtalk", "feishu"] = "json"
    # json: HMAC-SHA256 of the body in X-Koubo-Signature; dingtalk and feishu: the bots' own signing.
    webhook_secret: str | None = None
    webhook_timeout: float = Field(10.0, gt=0, description="seconds one delivery attempt may take")

    # Object storage (koubo/storage.py, koubo/ops/offload.py): after a job is done, its MP4 goes to an
    # S3-compatible bucket (copy: kept here too; move: deleted here once the upload is verified) and
    # its links become presigned bucket URLs. Credentials: s3_credentials_file (AWS format, mode 600)
    # or boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    storage_upload: Literal["off", "copy", "move"] = "off"
    s3_endpoint_url: str | None = Field(None, description="e.g. http://minio:9000; unset: AWS S3")
    s3_region: str = "us-east-1"
    s3_bucket: str | None = None
    s3_prefix: str = Field("koubo/", description="object keys are <prefix><job id>/<file name>")
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_credentials_file: Path | None = None
    s3_retry_interval: float = Field(60.0, gt=0, description="seconds before a failed upload is tried again (doubling)")

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def gradio_dir(self) -> Path:
        """Where the web UI's uploads land first (Gradio's temp folder), swept by retention."""
        return self.data_dir / "gradio"

    @property
    def uploads_dir(self) -> Path:
        return (self.storage_dir or self.data_dir) / "uploads"

    @property
    def outputs_dir(self) -> Path:
        return (self.storage_dir or self.data_dir) / "outputs"

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def queue_location(self) -> str:
        return self.queue_url or f"sqlite:///{(self.data_dir / 'queue.db').resolve()}"

    @property
    def database_location(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'koubo.db').resolve()}"

    @property
    def links_base(self) -> str:
        """The signed links' base URL, without a trailing slash."""
        if self.links_base_url:
            return self.links_base_url.rstrip("/")
        # A wildcard address is where the server listens, not where anyone can reach it.
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.links_port}"

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
        toml_file = _settings_file()
        inherited = os.environ.get(SETTINGS_JSON_VARIABLE)
        parent = (InitSettingsSource(settings_cls, init_kwargs=json.loads(inherited)),) if inherited else ()
        return (
            init_settings,
            *parent,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def load_settings(**overrides: object) -> Settings:
    """The settings, `overrides` (the command line's) first; a value that fails its check is said in
    both languages, not as a traceback."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise errors.bad_settings(exc.errors()) from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.bad_settings_file(str(_settings_file()), str(exc)) from None


def _settings_file() -> Path:
    return Path(os.environ.get("KOUBO_CONFIG", "koubo.toml"))


def child_environment(settings: Settings, environ: dict[str, str]) -> dict[str, str]:
    """`environ` for a child process whose load_settings() equals `settings`, overrides and None included.

    The per-setting KOUBO_* variables are dropped: the JSON carries every setting, in one way.
    """
    env = {key: value for key, value in environ.items() if not _is_setting_variable(key)}
    env[SETTINGS_JSON_VARIABLE] = settings.model_dump_json()
    return env


def _is_setting_variable(key: str) -> bool:
    return key.startswith("KOUBO_") and key[len("KOUBO_") :].lower() in Settings.model_fields
