"""BlazeFace's early-stopping NMS against the full NMS it replaced (issue 15): same boxes, and the time saved.

    OMP_NUM_THREADS=1 python scripts/experiments/nms_early_stop_check.py

The full version is fakeface/blazeface.py as of commit 47e4337 (read with `git show`): every anchor through
the NMS, boxes under the score threshold dropped afterwards. 60 seeded images per source plus examples/.
"""

import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from fakeface import blazeface  # noqa: E402
from fakeface.images import load_image  # noqa: E402

BEFORE = "47e4337"
SOURCES = ("ciplab", "ffhq-real", "stylegan-boredhumans", "sd21-sdfd", "dfdc")


def previous_module():
    code = subprocess.run(["git", "show", f"{BEFORE}:fakeface/blazeface.py"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "blazeface_before.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("fakeface.blazeface_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.MODEL_FILE = blazeface.MODEL_FILE  # the same vendored file
    return module


def main() -> None:
    data = ROOT.parent / "shared" / "data"
    files = []
    for source in SOURCES:
        found = sorted((data / source).rglob("*.jpg")) + sorted((data / source).rglob("*.png"))
        random.Random(2).shuffle(found)
        files += found[:60]
    files += sorted((ROOT / "examples").glob("*.jpg"))
    before, after = previous_module().BlazeFaceShortRange(), blazeface.BlazeFaceShortRange()
    same, t_before, t_after = 0, [], []
    for path in files:
        image = load_image(path)
        t0 = time.perf_counter()
        full = [b for b in before.detect(image, min_score=0.0) if b[4] >= blazeface.MIN_SCORE]
        t_before.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        stopped = after.detect(image, min_score=blazeface.MIN_SCORE)
        t_after.append(time.perf_counter() - t0)
        same += full == stopped
    print(f"identical boxes on {same}/{len(files)} images; BlazeFace median "
          f"{1000 * statistics.median(t_before):.2f} ms (full NMS) vs {1000 * statistics.median(t_after):.2f} ms")


if __name__ == "__main__":
    main()
