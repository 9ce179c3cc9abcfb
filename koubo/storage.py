"""Finished videos in an S3-compatible bucket (MinIO, Ceph RGW, Alibaba OSS, Tencent COS, AWS S3).

Many teams hand videos out from their own bucket with temporary links instead of exposing the render
machine. This module is the bucket itself: a verified upload, a presigned GET that keeps the Chinese
file name, and a delete. When to upload, and what the job records, is koubo/ops/offload.py's.
"""

from __future__ import annotations

import configparser
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from s3transfer.utils import ChunksizeAdjuster

from koubo.config import Settings
from koubo.errors import ErrorCode, KouboError

log = logging.getLogger(__name__)

# SigV4 presigned URLs live at most 7 days; S3 and its imitations refuse longer ones.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
# Parts of a multipart upload; also what the expected ETag is computed with, so both must agree.
PART_BYTES = 16 * 1024 * 1024
_READ_BYTES = 1024 * 1024


class StorageError(KouboError):
    """The bucket could not be used; the job stays done with its local file."""


def storage_config_error(en: str, zh: str) -> KouboError:
    return KouboError(ErrorCode.STORAGE_CONFIG, f"Object storage settings: {en}", f"对象存储设置：{zh}")


def link_too_long(asked: float) -> KouboError:
    days = MAX_PRESIGN_SECONDS // 86400
    return KouboError(
        ErrorCode.LINK_TOO_LONG,
        f"Links to object storage last at most {days} days (S3 presigned URLs cannot last longer); "
        f"{'a link that never expires' if asked == 0 else f'{asked:.0f} seconds'} was asked.",
        f"对象存储链接最长有效 {days} 天（S3 预签名链接不能更长），而请求的是"
        f"{'永不过期的链接' if asked == 0 else f' {asked:.0f} 秒'}。",
    )


@dataclass(frozen=True)
class StoredObject:
    key: str
    etag: str


@dataclass(frozen=True)
class Presigned:
    url: str
    expires_at: datetime


class ObjectStore:
    def __init__(self, settings: Settings) -> None:
        if not settings.s3_bucket:
            raise storage_config_error("s3_bucket is not set.", "未设置 s3_bucket。")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": settings.s3_addressing_style},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
            ),
            **credentials(settings.s3_credentials_file),
        )

    def key_for(self, job_id: str, name: str) -> str:
        return f"{self.prefix}{job_id}/{name}"

    def put_verified(self, path: Path, key: str) -> StoredObject:
        """Upload `path` (multipart when large) and check the stored object's size and ETag against the
        file's own; raises StorageError when they differ (the object is then deleted)."""
        size = path.stat().st_size
        part = ChunksizeAdjuster().adjust_chunksize(PART_BYTES, size)
        transfer = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=part)
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": "video/mp4"}, Config=transfer)
        head = self.client.head_object(Bucket=self.bucket, Key=key)
        etag = head["ETag"].strip('"')
        expected = expected_etag(path, part, multipart=size >= PART_BYTES)
        if head["ContentLength"] != size or etag.lower() != expected:
            self.delete(key)
            raise StorageError(
                ErrorCode.STORAGE_MISMATCH,
                f"The uploaded object {key} does not match the local file (size {head['ContentLength']} of {size}, "
                f"ETag {etag}, expected {expected}); it was deleted and the upload will be retried.",
                f"上传的对象 {key} 与本地文件不一致（大小 {head['ContentLength']}/{size}，ETag {etag}，应为 {expected}），"
                "已删除并将重试上传。",
            )
        return StoredObject(key, etag)

    def presign(self, key: str, disposition: str, lifetime: float) -> Presigned:
        """A GET URL valid for `lifetime` seconds whose answer carries `disposition` (the file name)."""
        if lifetime <= 0 or lifetime > MAX_PRESIGN_SECONDS:
            raise link_too_long(lifetime)
        seconds = int(lifetime)
        url = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": disposition,
                "ResponseContentType": "video/mp4",
            },
            ExpiresIn=seconds,
        )
        return Presigned(url, datetime.now(UTC) + timedelta(seconds=seconds))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


def delete_object(settings: Settings, key: str) -> bool:
    """Delete `key` from the configured bucket; a bucket that cannot be reached is logged, not raised:
    the job's row and local file go regardless, and the object is named in the log for a manual delete."""
    try:
        ObjectStore(settings).delete(key)
    except Exception as error:  # noqa: BLE001 - any client or network failure means the same here
        log.warning("object storage: could not delete %s (%s); delete it by hand", key, error)
        return False
    return True


def expected_etag(path: Path, part_bytes: int, multipart: bool) -> str:
    """The ETag S3 gives an unencrypted object: the file's MD5 for a single PUT; for a multipart upload
    in parts of `part_bytes`, the MD5 of the parts' MD5s followed by "-<parts>"."""
    if not multipart:
        whole = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as source:
            while chunk := source.read(_READ_BYTES):
                whole.update(chunk)
        return whole.hexdigest()
    digests: list[bytes] = []
    with path.open("rb") as source:
        while True:
            part = hashlib.md5(usedforsecurity=False)
            remaining = part_bytes
            while remaining and (chunk := source.read(min(_READ_BYTES, remaining))):
                part.update(chunk)
                remaining -= len(chunk)
            if remaining == part_bytes:
                break
            digests.append(part.digest())
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(digests)}"


def credentials(path: Path | None) -> dict[str, Any]:
    """Keys from an AWS-style credentials file readable only by koubo; without one, boto3's own chain
    (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment, ~/.aws, an instance role)."""
    if path is None:
        return {}
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise storage_config_error(
            f"the credentials file {path} cannot be read ({error}).", f"无法读取凭据文件 {path}（{error}）。"
        ) from error
    if mode & (stat.S_IRWXG | stat.S_IRWXO) or not os.access(path, os.R_OK):
        raise storage_config_error(
            f"the credentials file {path} must be readable by koubo's user only (chmod 600 {path}).",
            f"凭据文件 {path} 只能由 koubo 的用户读取（请执行 chmod 600 {path}）。",
        )
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    section = parser["default"] if parser.has_section("default") else None
    if section is None or "aws_access_key_id" not in section or "aws_secret_access_key" not in section:
        raise storage_config_error(
            f"the credentials file {path} needs a [default] section with aws_access_key_id and aws_secret_access_key.",
            f"凭据文件 {path} 需要包含 aws_access_key_id 和 aws_secret_access_key 的 [default] 段。",
        )
    return {
        "aws_access_key_id": section["aws_access_key_id"],
        "aws_secret_access_key": section["aws_secret_access_key"],
    }
