"""The page in a real browser: upload an image, get a verdict and a heat map.

Needs Playwright and /usr/bin/chromium (apt-get install -y chromium); skipped without them.
FAKEFACE_SCREENSHOT=1 also saves docs/screenshot.png, served by the real model when one loads
(FAKEFACE_MODEL, the Hub or the bundled copy), else by the tiny test model.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from helpers import SigningCertificates, encoded
from test_app import photo_bytes, running_app, tiny_predictor

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "screenshot.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]

pytestmark = pytest.mark.slow


def _predictor(tmp_path):
    if os.environ.get("FAKEFACE_SCREENSHOT") == "1":
        from fakeface.errors import FakefaceError
        from fakeface.predictor import Predictor

        try:
            return Predictor.load()
        except FakefaceError:
            pass  # no real model here: the screenshot shows the tiny one
    return tiny_predictor(tmp_path / "tiny-model")


def _test_image(tmp_path) -> Path:
    for name in ("two_faces.jpg", "astronaut.jpg"):
        if (ROOT / "examples" / name).is_file():
            return ROOT / "examples" / name
    path = tmp_path / "photo.png"
    path.write_bytes(photo_bytes(size=256))
    return path


@pytest.fixture(scope="module")
def sync_api():
    api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install -y chromium)")
    return api


@pytest.fixture(scope="module")
def served(sync_api, tmp_path_factory):
    """(predictor, base URL, browser page) for the whole module: one server, one browser."""
    predictor = _predictor(tmp_path_factory.mktemp("browser"))
    with running_app(predictor) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield predictor, url, browser.new_page(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


def test_upload_shows_verdict_and_heatmap(served, sync_api, tmp_path):
    predictor, url, page = served
    expect = sync_api.expect
    page.goto(url, wait_until="domcontentloaded")
    expect(page.locator("#model-source")).to_contain_text(predictor.source.describe(), timeout=60_000)
    page.locator("#image-input input[type=file]").set_input_files(str(_test_image(tmp_path)))
    page.locator("#analyse-button").click()
    expect(page.locator("#verdict")).to_contain_text(re.compile("REAL|FAKE"), timeout=120_000)
    expect(page.locator("#heatmap img")).to_be_visible(timeout=30_000)
    expect(page.locator("#summary")).to_contain_text("Fake probability")
    expect(page.locator(".pending")).to_have_count(0, timeout=60_000)  # the upload and the click may both run
    if os.environ.get("FAKEFACE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_batch_tab_fills_the_table(served, sync_api, tmp_path):
    _, url, page = served
    expect = sync_api.expect
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"batch{i}.png")
        paths[-1].write_bytes(photo_bytes(seed=i))
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-files input[type=file]").set_input_files([str(p) for p in paths])
    page.locator("#batch-button").click()
    expect(page.locator("#batch-summary")).to_contain_text("Analysed 2 file(s)", timeout=120_000)
    expect(page.locator("#batch-table")).to_contain_text("batch1.png")


def test_signed_upload_shows_the_provenance_panel(served, sync_api, tmp_path):
    """A JPEG signed with Content Credentials declaring AI, uploaded through the page: the browser sends the file
    as it is, so the panel reads the signed manifest and the verdict is FAKE."""
    _, url, page = served
    expect = sync_api.expect
    signed = tmp_path / "signed.jpg"
    signed.write_bytes(SigningCertificates().sign(encoded(Image.open(io.BytesIO(photo_bytes(size=128))), "JPEG"),
                                                  "image/jpeg"))
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#image-input input[type=file]").set_input_files(str(signed))
    expect(page.locator("#provenance")).to_contain_text("Signed: AI-generated", timeout=120_000)
    expect(page.locator("#provenance")).to_contain_text("Fakeface Test Signer")
    expect(page.locator("#verdict")).to_contain_text("FAKE")
    expect(page.locator("#summary")).to_contain_text("Content Credentials decide")
