"""The interactive docs (``/docs``: Swagger UI, ``/redoc``: ReDoc) served from assets
installed with the package, so they work on a machine without internet access.

FastAPI's own docs pages load Swagger UI and ReDoc from a CDN. The same pages are built
here with FastAPI's helpers, pointed at the distribution files that the
``fastapi-offline`` package ships (Swagger UI's bundle and CSS, ReDoc's standalone
build), served as static files under ``/docs/assets`` (ReDoc's without the address of
its logo on Redocly's CDN).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
# ReDoc's side menu shows a "powered by" logo from Redocly's CDN, hidden when it does not
# load: its script is served with that address replaced by an empty image of its own, so
# the page asks no other host for anything.
REDOC_JS_URL = f"{ASSETS_URL}/redoc.offline.js"
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
NO_IMAGE = b"data:,"
# The pages load nothing from elsewhere. Swagger UI's page starts
# it with an inline script; ReDoc searches in a blob: worker.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
    "frame-ancestors 'self'"
)


def _own_assets_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their assets; build the app with ``docs_url=None,
    redoc_url=None`` so FastAPI does not add its CDN-backed pages."""
    redoc_js = (ASSETS_DIR / "redoc.standalone.js").read_bytes().replace(
        REDOC_CDN_LOGO, NO_IMAGE)

    @app.get(REDOC_JS_URL, include_in_schema=False)  # before the mount, which would take it
    async def redoc_script() -> Response:
        return Response(redoc_js, media_type="text/javascript")

    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    title = app.title

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _own_assets_only(get_swagger_ui_html(
            openapi_url=str(app.openapi_url), title=f"{title} — API docs",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        ))

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _own_assets_only(get_redoc_html(
            openapi_url=str(app.openapi_url), title=f"{title} — API reference",
            redoc_js_url=REDOC_JS_URL,
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        ))


def is_docs_path(app: FastAPI | None, path: str) -> bool:
    """The docs pages, the OpenAPI document and the docs' assets: not the API itself."""
    return (path in {DOCS_URL, REDOC_URL, OAUTH2_REDIRECT_URL}
            or path.startswith(ASSETS_URL + "/")
            or (app is not None and path == app.openapi_url))
