"""The Video tab in a real browser: upload a clip, see the verdict scale, the timeline and the suspicious frames;
a typed threshold re-reads the kept scores without running the model again.

Needs Playwright and /usr/bin/chromium; skipped without them (see tests/test_browser.py).
"""

from __future__ import annotations

import pytest

from test_browser import served, sync_api  # noqa: F401  (one server with a counting test model, one browser)
from test_video import pair
from fakeface.video_encode import pan_zoom_clip

pytestmark = pytest.mark.slow


def test_video_tab_shows_verdict_timeline_and_frames_then_a_typed_threshold(served, sync_api, tmp_path):  # noqa: F811
    predictor, url, page = served
    expect = sync_api.expect
    clip = pan_zoom_clip(pair(), tmp_path / "two_people.mp4", size=(384, 192), seconds=1.0, fps=10,
                         zoom=(1.0, 1.1), preset="ultrafast")
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Video").click()
    expect(page.locator("#video-examples")).to_be_visible(timeout=60_000)
    before = predictor.runs
    page.locator("#video-input input[type=file]").set_input_files(clip)
    expect(page.locator("#video-verdict")).to_contain_text("Fake probability", timeout=180_000)
    expect(page.locator("#video-summary")).to_contain_text("10 frames sampled from 1.0 s")
    expect(page.locator("#video-summary")).to_contain_text("2 face track(s)")
    expect(page.locator("#video-timeline img")).to_be_visible(timeout=30_000)
    expect(page.locator("#video-frames img").first).to_be_visible(timeout=30_000)
    expect(page.locator(".pending")).to_have_count(0, timeout=60_000)
    runs = predictor.runs - before
    assert 10 <= runs <= 10 + 3  # one per sampled frame, then the heat maps of the most suspicious frames

    number = page.locator("#video-threshold input[type=number]")
    for typed, verdict in (("0.01", "FAKE"), ("0.99", "REAL")):
        number.fill(typed)
        number.press("Enter")
        expect(page.locator("#video-verdict")).to_contain_text(f"threshold {typed}", timeout=30_000)
        expect(page.locator("#video-verdict")).to_contain_text(verdict)
    assert predictor.runs - before == runs  # no model run for a new threshold
