"""Launch tiny-color from the form in a real browser, watch it train live, cancel it, and browse
its gallery. Screenshots of each page land in var/test-artifacts/ (GROUPWISE_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.webapp.browser import chromium
from tests.webapp.servers import REPO, run_dashboard

ARTIFACTS = Path(os.environ.get("GROUPWISE_TEST_ARTIFACTS", REPO / "var" / "test-artifacts"))


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_launch_watch_cancel_and_browse(tmp_path: Path) -> None:
    with run_dashboard(tmp_path) as dashboard, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{dashboard.base}/login/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", dashboard.admin_password())
        page.click("button[type=submit]")

        page.goto(f"{dashboard.base}/runs/new/?preset=tiny-color")
        expect(page.locator("#layout-state")).to_have_text("Valid recipe.")
        # The memory plan per GPU: the total against gpu_memory_gb, a row and a bar per item.
        expect(page.locator("#memory-total")).to_contain_text("of 80 GB")
        # One row per item of the plan (tests/engine/cli/test_main.py lists the 12 by name).
        expect(page.locator("#memory-table tr")).to_have_count(12)
        expect(page.locator("#memory-table tr[data-item='colocated server']")).to_have_count(1)
        expect(page.locator("#memory-table tr[data-item='headroom'] .membar")).to_be_visible()
        expect(page.locator("#memory-table tr[data-item='rollout activations']")).to_have_class(
            "other-phase"
        )
        page.fill("#id_layout__diffusion_microgroup_size", "3")
        expect(page.locator("#layout-problems")).to_contain_text("use 1, 2, 4 or 8")
        page.fill("#id_layout__diffusion_microgroup_size", "4")
        expect(page.locator("#layout-state")).to_have_text("Valid recipe.")
        page.fill("#id_name", "browser run")
        shot(page, "new-run")
        page.click("button:has-text('Launch')")
        expect(page).to_have_url(re.compile(r"/runs/\d+/$"))

        # The grid fills and the reward chart grows while the run trains.
        expect(page.locator("#groups .group-row")).to_have_count(4, timeout=180_000)
        page.wait_for_function(
            "document.querySelector('#chart-reward polyline') && "
            "document.querySelector('#chart-reward polyline').getAttribute('points')"
            ".trim().split(' ').length >= 2",
            timeout=180_000,
        )
        expect(page.locator("#run-status")).to_have_text("running")
        shot(page, "run-live")
        page.locator("#groups img").first.click()
        expect(page.locator("#lightbox-caption")).to_contain_text("seed")
        page.keyboard.press("Escape")

        page.click("#cancel-button")
        expect(page.locator("#run-status")).to_have_text("cancelled", timeout=120_000)
        shot(page, "run-cancelled")

        page.click("a:has-text('gallery')")
        slider = page.locator("#step-slider")
        expect(slider).to_be_visible()
        last = int(slider.get_attribute("max") or 0)
        assert last >= 1
        slider.evaluate(
            "(el) => { el.value = 0; el.dispatchEvent(new Event('input')); "
            "el.dispatchEvent(new Event('change')); }"
        )
        expect(page).to_have_url(re.compile(r"step=0"))
        expect(page.locator(".gallery-grid figure")).to_have_count(32)  # 4 prompts x G=8
        shot(page, "gallery")
