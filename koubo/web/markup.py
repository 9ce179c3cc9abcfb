"""The UI's HTML templates (koubo/web/templates/*.html), rendered by Jinja2 with autoescaping on:
every value, file names included (any Unicode), is escaped by the template engine rather than by
each f-string that builds markup. `t` (koubo.web.i18n) is there to pick each text in the language."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from koubo.web.i18n import t


@cache
def _environment() -> Environment:
    # StrictUndefined: a misspelt name in a template is an error in the tests, not an empty cell.
    environment = Environment(
        loader=PackageLoader("koubo.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["t"] = t
    return environment


def render(name: str, **context: Any) -> str:
    """The template `name` filled in; no newline at its end, so panels join without gaps."""
    return _environment().get_template(name).render(**context).strip()
