"""FastAPI dependencies: the settings and the JobService the app was created with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from koubo.config import Settings
from koubo.jobs.service import JobService


def get_service(request: Request) -> JobService:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[JobService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
