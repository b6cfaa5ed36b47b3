"""A run of 2,000 rollouts opens in a real browser from its current state, without fetching its
history: the reward chart stands for every rollout (downsampled on the server), the page
subscribes after the last event, a zoom fetches full resolution, and live events still arrive."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Request, WebSocket, expect

from tests.webapp.browser import chromium
from tests.webapp.servers import run_dashboard

ROLLOUTS = 2000
#: static/groupwise/run.js's POINTS (webapp.runs.metrics.CHART_POINTS).
POINTS = 500
#: The issue's bound on what a long run's page may transfer before it is drawn.
MAX_BYTES = 2 * 1024 * 1024


def test_a_long_run_opens_from_its_state_and_follows_live(tmp_path: Path) -> None:
    with run_dashboard(tmp_path) as dashboard, chromium() as browser:
        made = dashboard.manage(
            "synthesize_run", "--rollouts", str(ROLLOUTS), "--prompts", "4", "--samples", "2",
            "--owner", "admin",
        )  # fmt: skip
        match = re.search(r"run (\d+) last_seq (\d+)", made)
        assert match, made
        run_id, last_seq = int(match.group(1)), int(match.group(2))

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{dashboard.base}/login/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", dashboard.admin_password())
        page.click("button[type=submit]")
        expect(page).not_to_have_url(re.compile(r"/login/"))

        finished: list[Request] = []
        subscriptions: list[dict[str, Any]] = []

        def opened(socket: WebSocket) -> None:
            socket.on(
                "framesent",
                lambda frame: subscriptions.append(json.loads(frame)),  # type: ignore[arg-type]
            )

        page.on("requestfinished", lambda request: finished.append(request))
        page.on("websocket", opened)
        page.goto(f"{dashboard.base}/runs/{run_id}/")

        chart = page.locator("#chart-reward")
        expect(chart).to_have_attribute("data-rollouts", str(ROLLOUTS), timeout=60_000)
        expect(chart).to_have_attribute("data-points", str(POINTS))
        expect(chart).to_have_attribute("data-first-step", "0")
        expect(chart).to_have_attribute("data-last-step", str(ROLLOUTS - 1))
        points = chart.locator("polyline").first.get_attribute("points") or ""
        assert len(points.split()) == POINTS
        expect(page.locator("#groups-title")).to_contain_text(f"rollout {ROLLOUTS - 1}")
        expect(page.locator("#groups .group-row")).to_have_count(4)
        page.wait_for_function("() => document.getElementById('live-state').textContent === 'live'")
        page.wait_for_function(
            f"() => document.getElementById('run-page').dataset.lastSeq == '{last_seq}'"
        )

        urls = [r.url for r in finished]
        assert not [u for u in urls if "/events/" in u], "no page of the run's history"
        # What came over the wire: every body (as sent: encoded, if it was) and its headers.
        sent = sum(
            r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"] for r in finished
        )
        assert sent < MAX_BYTES, f"{sent} bytes: {urls}"
        assert [s["after"] for s in subscriptions if s.get("type") == "subscribe"] == [last_seq]

        # Dragging across the chart zooms: the steps under the drag at full resolution.
        chart.scroll_into_view_if_needed()
        box = chart.locator("svg").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
        expect(page.locator("#zoom-reset")).to_be_visible()
        page.wait_for_function(
            "() => { const c = document.getElementById('chart-reward').dataset;"
            " return Number(c.rollouts) < 500 && Number(c.rollouts) === Number(c.points); }"
        )
        page.click("#zoom-reset")
        expect(chart).to_have_attribute("data-rollouts", str(ROLLOUTS))

        # A new rollout reaches the open page through its socket, nothing fetched again.
        fetched = len(finished)
        dashboard.manage(
            "synthesize_run",
            "--append-to",
            str(run_id),
            "--rollouts",
            "1",
            "--prompts",
            "4",
            "--samples",
            "2",
        )
        expect(page.locator("#groups-title")).to_contain_text(f"rollout {ROLLOUTS}", timeout=60_000)
        expect(chart).to_have_attribute("data-rollouts", str(ROLLOUTS + 1))
        expect(chart).to_have_attribute("data-last-step", str(ROLLOUTS))
        later = [r.url for r in finished[fetched:]]
        assert not [u for u in later if "/api/" in u], later
