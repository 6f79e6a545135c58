"""Make the example clips in examples/ from the project's public-domain example photos (no other source).

    python scripts/make_video_examples.py [--out examples]

Each clip is a slow pan and zoom over one photo (fakeface.video_encode.pan_zoom_clip), encoded as H.264 MP4 with
PyAV: a real portrait, and two people side by side where one face is a composite, so the clip's verdict has to
follow the right track. The frames are the same on every run; the encoded bytes may differ slightly (x264's
rate control is not bit-exact from run to run here), so the committed files are the reference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from fakeface.video_encode import pan_zoom_clip  # noqa: E402
from make_examples import PAIR_HEIGHT, side_by_side  # noqa: E402  (scripts/make_examples.py)

# name -> (photos placed side by side, frame size, zoom from -> to, pan from -> to)
CLIPS = {
    "grace_hopper_pan.mp4": (["grace_hopper.jpg"], (384, 448), (1.0, 1.2), (0.2, 0.7)),
    "composite_beside_real_pan.mp4": (["grace_hopper.jpg", "composite_astronaut_with_hopper_features.jpg"],
                                      (480, 240), (1.0, 1.15), (0.0, 1.0)),
}
SECONDS, FPS, CRF = 3.0, 25, 26


def make_clips(photo_dir: Path, out_dir: Path) -> list[Path]:
    written = []
    for name, (photos, size, zoom, pan) in CLIPS.items():
        images = [Image.open(photo_dir / p).convert("RGB") for p in photos]
        scene = images[0] if len(images) == 1 else side_by_side(images, PAIR_HEIGHT)
        path = out_dir / name
        pan_zoom_clip(scene, path, size=size, seconds=SECONDS, fps=FPS, crf=CRF, zoom=zoom, pan=pan)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=ROOT / "examples", help="where the example photos are")
    parser.add_argument("--out", type=Path, default=ROOT / "examples")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in make_clips(args.photos, args.out):
        print(f"{path}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
