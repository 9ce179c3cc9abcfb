"""FastAPI dependencies: the settings and the JobService the app was created with, and shared parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from koubo.config import Settings
from koubo.jobs.service import JobService
from koubo.links.handout import LinkMaker
from koubo.links.signing import MAX_LIFETIME


def get_service(request: Request) -> JobService:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_links(request: Request) -> LinkMaker:
    return request.app.state.links


ServiceDep = Annotated[JobService, Depends(get_service)]
LinksDep = Annotated[LinkMaker, Depends(get_links)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
# How long a signed link handed out by the API lasts; None: the configured link_lifetime.
LinkLifetime = Annotated[
    float | None,
    Query(ge=0, le=MAX_LIFETIME, allow_inf_nan=False, description="seconds the link lasts; 0 = never"),
]
