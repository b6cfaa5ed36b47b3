"""The home page in a real browser: log in, watch the status panel go live, ping a worker."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from tests.webapp.browser import chromium
from tests.webapp.servers import run_dashboard


def test_login_then_live_status_panel_and_worker_ping(tmp_path: Path) -> None:
    with run_dashboard(tmp_path) as dashboard, chromium() as browser:
        page = browser.new_page()
        page.goto(f"{dashboard.base}/")
        expect(page).to_have_url(f"{dashboard.base}/login/?next=/")

        page.fill("#id_username", "admin")
        page.fill("#id_password", "wrong password")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_contain_text("didn't match")

        page.fill("#id_username", "admin")
        page.fill("#id_password", dashboard.admin_password())
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{dashboard.base}/")

        expect(page.locator("#socket-state")).to_have_text("live updates: on", timeout=15_000)
        expect(page.locator("#status-overall")).to_have_text("ok", timeout=15_000)
        expect(page.locator("#worker-list li code")).to_contain_text("groupwise-")

        page.click("#ping-button")
        expect(page.locator("#ping-result")).to_contain_text("pong from pid", timeout=15_000)
        page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
