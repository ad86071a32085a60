"""``/docs`` and ``/redoc`` work without internet access: rendered in a real headless
Chromium whose every request to another host is refused."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from importlib.metadata import version
from urllib.parse import urlparse

import pytest

from infra.config import Settings
from tests.support.stack import Stack, running_stack

CHROMIUM = os.environ.get("RIDEHAIL_TEST_CHROMIUM") or shutil.which("chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: install Debian's `chromium` package (apt-get install chromium)",
)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, components=("api",)) as stack:
        yield stack


async def test_docs_render_offline_from_installed_assets(api: Stack) -> None:
    base = api.settings.api_url
    refused: list[str] = []
    failed: list[str] = []

    async def local_only(route: playwright.Route) -> None:
        if urlparse(route.request.url).hostname in LOCAL_HOSTS:
            await route.continue_()
        else:  # what a machine without internet would do to it
            refused.append(route.request.url)
            await route.abort("internetdisconnected")

    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"],
        )
        try:
            context = await browser.new_context()
            await context.route("**/*", local_only)
            page = await context.new_page()
            page.on("requestfailed", lambda r: failed.append(r.url)
                    if urlparse(r.url).hostname in LOCAL_HOSTS else None)

            # Swagger UI: the operations, by path, rendered from the OpenAPI document
            answer = await page.goto(f"{base}/docs")
            assert answer is not None and "default-src 'self'" in (
                await answer.header_value("content-security-policy") or "")
            ride = page.locator('.opblock-summary-path[data-path="/v1/rides/{ride_id}"]')
            await ride.first.wait_for(timeout=30_000)
            paths = await page.locator(".opblock-summary-path").evaluate_all(
                "els => els.map(e => e.dataset.path)")
            assert {"/v1/rides", "/v1/quotes", "/v1/drivers/me/offers"} <= set(paths), paths
            assert await page.get_by_role("button", name="Authorize").count() == 1

            # ReDoc: the API's title and its operations in the side menu; the page and
            # its script name no other host (its "powered by" logo is not Redocly's CDN's)
            answer = await page.goto(f"{base}/redoc")
            assert answer is not None
            html = await answer.text()
            assert re.findall(r"(?:src|href)=[\"']?(?:https?:)?//", html) == [], html
            script = re.search(r'<script src="(/[^"]+)"', html)
            assert script is not None, html
            code = await (await page.request.get(f"{base}{script[1]}")).text()
            assert "cdn.redoc.ly" not in code
            title = f"ridehail ({version('ridehail')})"  # the package's, as /openapi.json
            await page.get_by_text(title).first.wait_for(timeout=30_000)
            menu = await page.locator("[role=menuitem], li label").all_inner_texts()
            assert any("ride" in m.lower() for m in menu), menu
        finally:
            await browser.close()
    assert refused == [], f"the docs reached for other hosts: {refused}"
    assert failed == [], f"assets that did not load: {failed}"
