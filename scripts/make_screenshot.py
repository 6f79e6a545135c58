"""Regenerate docs/screenshot.png: the Space's page, served by the current model, in headless Chromium.

    .venv/bin/python scripts/make_screenshot.py            # the model app.py would serve (bundled by default)
    FAKEFACE_MODEL=runs/x/model .venv/bin/python scripts/make_screenshot.py --image examples/astronaut.jpg

Needs playwright (pip) and Chromium (/usr/bin/chromium: apt-get install -y chromium). The page shows exactly
what a visitor would see after uploading the image: nothing in the picture is drawn by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # app.py lives in the checkout's root

import app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=str(ROOT / "examples" / "two_faces.jpg"), help="the image to upload")
    parser.add_argument("--output", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)

    from playwright.sync_api import expect, sync_playwright

    predictor = app.startup.start_or_exit(app.start_predictor)  # the model app.py serves, with its messages
    with app.served_in_thread(predictor, start_timeout_s=120) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 1000})
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#image-input input[type=file]").set_input_files(args.image)
        expect(page.locator("#verdict")).to_contain_text(re.compile("REAL|UNCERTAIN|FAKE|NO FACE"), timeout=180_000)
        expect(page.locator(".pending")).to_have_count(0, timeout=60_000)
        page.wait_for_timeout(500)  # let the images finish fading in
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.output, full_page=True)
        browser.close()
    print(f"wrote {args.output} ({predictor.source.describe()}, {Path(args.image).name})")


if __name__ == "__main__":
    main()
