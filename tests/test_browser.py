"""The page in a real browser: upload an image, get a verdict and a heat map; a typed threshold; no face.

Needs Playwright and /usr/bin/chromium (apt-get install -y chromium); skipped without them.
docs/screenshot.png is made by scripts/make_screenshot.py (the same browser, the real model).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from fakeface.predictor import Predictor
from helpers import SigningCertificates, encoded
from test_app import FACE, photo_bytes, running_app, tiny_predictor

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]

pytestmark = pytest.mark.slow


class CountingPredictor(Predictor):
    """The test model, counting its runs (one per image the page analyses)."""

    runs = 0

    def predict_image(self, image, threshold=None, heatmap=False):
        type(self).runs += 1
        return super().predict_image(image, threshold=threshold, heatmap=heatmap)


def _predictor(tmp_path) -> CountingPredictor:
    loaded = tiny_predictor(tmp_path / "tiny-model")
    return CountingPredictor(loaded.model, loaded.source)


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


def _analysed(page, expect, before: int, predictor) -> None:
    """Wait until the page has shown an answer and nothing is pending; exactly one more model run."""
    expect(page.locator("#verdict")).to_contain_text(re.compile("REAL|UNCERTAIN|FAKE|NO FACE"), timeout=120_000)
    expect(page.locator(".pending")).to_have_count(0, timeout=60_000)
    assert predictor.runs == before + 1


def test_upload_shows_verdict_boxes_and_heatmap_then_a_typed_threshold(served, sync_api):
    predictor, url, page = served
    expect = sync_api.expect
    page.goto(url, wait_until="domcontentloaded")
    expect(page.locator("#model-source")).to_contain_text("a model from a local folder", timeout=60_000)
    expect(page.locator("#examples img").first).to_be_visible()  # thumbnails, not text chips
    page.get_by_text("Model details").click()
    expect(page.locator("#model-details")).to_contain_text(predictor.source.describe())

    before = predictor.runs
    page.locator("#image-input input[type=file]").set_input_files(str(FACE))
    _analysed(page, expect, before, predictor)  # one upload, one model run
    expect(page.locator("#verdict")).to_contain_text("Fake probability")
    expect(page.locator("#heatmap img")).to_be_visible(timeout=30_000)
    expect(page.locator("#face-boxes img")).to_be_visible()

    # A typed threshold, then Enter: the answer follows at once, from the kept scores (no model run).
    number = page.get_by_label(re.compile("number input for Threshold")).first
    number.fill("0.01")
    number.press("Enter")
    expect(page.locator("#verdict")).to_contain_text("threshold 0.01", timeout=30_000)
    expect(page.locator("#verdict")).to_contain_text("FAKE")
    number.fill("0.99")
    number.press("Enter")
    expect(page.locator("#verdict")).to_contain_text("REAL", timeout=30_000)
    assert predictor.runs == before + 1

    # Another image over this one: again exactly one run.
    page.locator("#image-input input[type=file]").set_input_files(str(FACE.parent / "two_faces.jpg"))
    expect(page.locator("#summary")).to_contain_text("2 faces found", timeout=120_000)
    _analysed(page, expect, before + 1, predictor)
    expect(page.locator("#faces")).to_contain_text("Face 2")


def test_no_face_gets_no_verdict_on_the_page(served, sync_api, tmp_path):
    predictor, url, page = served
    expect = sync_api.expect
    noise = tmp_path / "noise.png"
    noise.write_bytes(photo_bytes(size=128))
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#image-input input[type=file]").set_input_files(str(noise))
    expect(page.locator("#verdict")).to_contain_text("NO FACE FOUND", timeout=120_000)
    expect(page.locator("#summary")).to_contain_text("No verdict")
    expect(page.locator("#heatmap img")).to_have_count(0)


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
