"""The ride's history as people read it: the Temporal UI, in a real headless Chromium."""

from __future__ import annotations

import os
import shutil

import pytest

from ridehail.scenarios import City, Timeouts, happy_path
from tests.support.stack import Stack

CHROMIUM = os.environ.get("RIDEHAIL_TEST_CHROMIUM") or shutil.which("chromium")
SAGA_ACTIVITIES = ("quote_fare", "authorize_payment", "reserve_driver", "assign_driver",
                   "capture_payment", "release_driver", "complete_ride")

playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: install Debian's `chromium` package (apt-get install chromium)",
)


async def test_a_completed_ride_reads_well_in_the_temporal_ui(stack: Stack) -> None:
    settings = stack.settings
    city = City(stack.http, settings.require_jwt_secret(), 0,
                Timeouts(settings.offer_timeout_s, settings.matching_deadline_s,
                         settings.free_cancel_s))
    ride_id = await happy_path(city)
    wf = f"ride-{ride_id}"
    await stack.temporal.get_workflow_handle(wf).result()
    ui = f"http://127.0.0.1:{settings.temporal_ui_port}"

    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1200})
            await page.goto(f"{ui}/namespaces/default/workflows/{wf}")
            await page.get_by_text(wf).first.wait_for(timeout=30_000)
            await page.get_by_text("COMPLETED").first.wait_for()
            assert await page.get_by_text("RideWorkflow").count() > 0

            # the saga's activities, by name, in the event history
            await page.get_by_text("Event History").first.click()
            await page.get_by_text("Workflow Execution Completed").first.wait_for()
            history = await page.inner_text("main")
            missing = [a for a in SAGA_ACTIVITIES if a not in history]
            assert missing == [], f"activities not shown in the UI history: {missing}"

            # the workflow's summary (rendered by the UI in its own frame)
            await page.get_by_text("User Metadata").first.click()
            await page.get_by_text("Summary").first.wait_for()

            async def rendered() -> str:
                texts = []
                for frame in page.frames[1:]:
                    try:
                        texts.append(await frame.inner_text("body", timeout=1000))
                    except playwright.Error:
                        continue  # a frame still loading
                return " ".join(texts)

            for _ in range(50):
                if f"Ride {ride_id} for rider {city.rider}" in await rendered():
                    break
                await page.wait_for_timeout(100)
            assert f"Ride {ride_id} for rider {city.rider}" in await rendered()
        finally:
            await browser.close()
