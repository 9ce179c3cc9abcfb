"""The UI's HTML templates (koubo/web/templates/*.html), rendered by Jinja2 with autoescaping on:
every value, file names included (any Unicode), is escaped by the template engine rather than by
each f-string that builds markup. `t` (koubo.web.i18n) is there to pick each text in the language.
The panels' stylesheet and page scripts are files too (koubo/web/static), read by `asset`."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from jinja2.ext import Extension

from koubo.web.i18n import t


class _JoinedLines(Extension):
    """Templates are written one element a line; the line breaks and indentation between tags are
    dropped from the source, as the markup was built before: between inline elements (a badge and its
    text, buttons) HTML would show them as spaces. What a value holds, newlines included, is kept."""

    _BETWEEN_TAGS = re.compile(r"([>}])[ \t]*\n\s*([<{])")

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return self._BETWEEN_TAGS.sub(r"\1\2", source)


@cache
def _environment() -> Environment:
    # StrictUndefined: a misspelt name in a template is an error in the tests, not an empty cell.
    environment = Environment(
        loader=PackageLoader("koubo.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_JoinedLines],
    )
    environment.globals["t"] = t
    return environment


def render(name: str, /, **context: Any) -> str:
    """The template `name` filled in; no newline at its end, so panels join without gaps. A panel
    that holds another one gets it as Markup (already escaped)."""
    return _environment().get_template(name).render(**context).strip()


def asset(name: str) -> str:
    """The text of koubo/web/static/`name` (a stylesheet or a page script Gradio runs)."""
    return files("koubo.web").joinpath("static", name).read_text(encoding="utf-8")
