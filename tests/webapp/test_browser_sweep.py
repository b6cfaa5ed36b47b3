"""A microgroup sweep from a run's page in a real browser, measured by the real worker."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

from tests.webapp.browser import chromium
from tests.webapp.servers import run_dashboard
from tests.webapp.test_browser_runs import shot


def test_sweep_from_a_run_page_renders_one_row_per_size(tmp_path: Path) -> None:
    with run_dashboard(tmp_path) as dashboard, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{dashboard.base}/login/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", dashboard.admin_password())
        page.click("button[type=submit]")

        page.goto(f"{dashboard.base}/runs/new/?preset=tiny-color")
        page.fill("#id_name", "sweep source")
        page.fill("#id_run__max_steps", "1")
        page.fill("#id_layout__n_samples_per_prompt", "4")
        page.fill("#id_layout__diffusion_microgroup_size", "4")
        page.fill("#id_layout__micro_batch_size_sample", "4")
        expect(page.locator("#layout-state")).to_have_text("Valid recipe.")
        page.click("button:has-text('Launch')")
        expect(page).to_have_url(re.compile(r"/runs/\d+/$"))

        page.fill("#id_sizes", "1, 2, 4")
        page.fill("#id_rollouts", "1")
        page.click("#sweep-button")
        expect(page).to_have_url(re.compile(r"/sweeps/\d+/$"))
        # The page refreshes itself while the worker measures (after the run's one step).
        expect(page.locator("#sweep-status")).to_have_text("finished", timeout=300_000)
        expect(page.locator("#sweep-rows tbody tr")).to_have_count(3)
        expect(page.locator("svg.sweep-chart")).to_have_count(4)
        expect(page.locator("svg.sweep-chart polyline").first).to_have_attribute(
            "points", re.compile(r"^\S+ \S+ \S+$")
        )
        for cell in page.locator("#sweep-rows tbody tr td:last-child").all():
            expect(cell).to_have_text("yes")  # the same samples at every M
        expect(page.locator("#sweep-machine")).to_contain_text("torch")
        shot(page, "sweep")

        page.click("#launch-best")
        expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
        expect(page.locator("h1")).to_contain_text("(M=")
