"""Which link a finished video is handed out with: one place for the API, the UI and the webhooks.

Once a job's video is in the bucket (koubo/ops/offload.py), a presigned bucket URL, so viewers
download from object storage and never reach the render machine; before that, or without object
storage, the signed direct link of koubo's own link server.
"""

from __future__ import annotations

from koubo.config import Settings
from koubo.links.delivery import content_disposition
from koubo.links.signing import SignedLink, signed_link
from koubo.storage import MAX_PRESIGN_SECONDS, ObjectStore


class LinkMaker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: ObjectStore | None = None  # made on first use: a boto3 client costs ~100 ms

    def job_link(
        self,
        job_id: str,
        name: str,
        storage_key: str | None,
        lifetime: float | None = None,
        inline: bool = False,
    ) -> SignedLink:
        """`lifetime` seconds (None: the configured link_lifetime); raises `link_too_long` for a bucket
        link asked to last longer than presigned URLs can."""
        if storage_key is None:
            return signed_link(self.settings, job_id, name, lifetime)
        if lifetime is None:
            # The configured default may be "never" or longer than a week: the longest a bucket allows.
            configured = self.settings.link_lifetime
            lifetime = MAX_PRESIGN_SECONDS if configured == 0 else min(configured, MAX_PRESIGN_SECONDS)
        disposition = content_disposition(name, fallback=f"koubo-{job_id[:8]}.mp4", inline=inline)
        presigned = self.store.presign(storage_key, disposition, lifetime)
        return SignedLink(presigned.url, presigned.expires_at, kind="bucket")

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ObjectStore(self.settings)
        return self._store
