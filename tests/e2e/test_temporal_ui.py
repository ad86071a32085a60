"""The ride's history as people read it: the Temporal UI, in a real headless Chromium."""

from __future__ import annotations

import os
import shutil

import pytest

from ridehail.load.apiclient import Api
from ridehail.load.scenarios import Scene, Timeouts, happy_path
from tests.support.stack import Stack
from workflows.contract import Step

CHROMIUM = os.environ.get("RIDEHAIL_TEST_CHROMIUM") or shutil.which("chromium")
# How the UI's event history labels a step: the payment gateway's steps are activities
# (shown by their scheduled event), the bookkeeping steps local activities (the UI's name
# for the marker that records one); both rows name the activity type.
ACTIVITY, LOCAL = "Activity Task Scheduled", "Local Activity"
SAGA_STEPS = [(Step.QUOTE_FARE, LOCAL), (Step.AUTHORIZE_PAYMENT, ACTIVITY),
              (Step.RESERVE_DRIVER, LOCAL), (Step.ASSIGN_DRIVER, LOCAL),
              (Step.RELEASE_DRIVER, LOCAL), (Step.CAPTURE_PAYMENT, ACTIVITY),
              (Step.COMPLETE_RIDE, LOCAL)]

playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: install Debian's `chromium` package (apt-get install chromium)",
)


async def test_a_completed_ride_reads_well_in_the_temporal_ui(stack: Stack) -> None:
    settings = stack.settings
    city = Scene(Api("", settings.require_jwt_secret(), http=stack.http), 0,
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

            # the saga's steps, by name and kind, in the event history
            await page.get_by_text("Event History").first.click()
            await page.get_by_text("Workflow Execution Completed").first.wait_for()
            rows = [step_shown(await row.inner_text()) for row in await page.locator("tr").all()]
            shown = [(name, kind) for _, kind, name in sorted(r for r in rows if r)]
            assert shown == SAGA_STEPS, f"the UI history shows the steps as {shown}"

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


def step_shown(row: str) -> tuple[int, str, str] | None:
    """A row of the UI's event history (event id, time, event type, then its details as
    label/value lines): (event id, event type, activity type) if it shows a step."""
    lines = [line.strip() for line in row.splitlines() if line.strip()]
    if len(lines) < 3 or not lines[0].isdigit() or lines[2] not in (ACTIVITY, LOCAL):
        return None
    details = lines[3:]
    if "Activity Type" not in details[:-1]:
        return None
    return int(lines[0]), lines[2], details[details.index("Activity Type") + 1]
