"""The documented paths of the app, for answers given outside the router: the ``Allow``
header of a 405 (``api.problems``) and the route label of a 413 (``api.metrics``)."""

from __future__ import annotations

import re

from fastapi import FastAPI


def _templates(app: FastAPI) -> list[tuple[re.Pattern[str], str, frozenset[str]]]:
    """(regex, template, methods) for each documented path, built once per app."""
    cached: list[tuple[re.Pattern[str], str, frozenset[str]]] | None = getattr(
        app.state, "documented_paths", None)
    if cached is None:
        cached = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
            cached.append((re.compile(pattern), template,
                           frozenset(m.upper() for m in operations)))
        app.state.documented_paths = cached
    return cached


def documented_path(app: FastAPI, path: str) -> tuple[str, frozenset[str]] | None:
    """The documented path template ``path`` falls under, and its methods: for the
    ``Allow`` header of a 405, and the route label of answers the router never saw
    (a 413 is answered before routing)."""
    for regex, template, methods in _templates(app):
        if regex.fullmatch(path):
            return template, methods
    return None
