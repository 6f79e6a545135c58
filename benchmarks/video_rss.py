"""Peak resident memory of video analysis: a 1080p 60 s clip at 16 (or --frames) sampled frames.

The process loads the model and answers one still image first (its peak then is the image route's), then
analyses the clip; the peak RSS (getrusage's high-water mark) before and after shows what the clip added. The
clip is made by fakeface.video_encode (a pan and zoom over examples/grace_hopper.jpg, x264 "veryfast", default
keyframe interval) and kept in out/bench/.

    python benchmarks/video_rss.py                 # 1920x1080, 60 s, 16 frames
    python benchmarks/video_rss.py --frames 64
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from benchutil import EXAMPLES, ROOT, end_load, proc_status


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main(argv=None) -> None:
    import os

    from PIL import Image

    from fakeface.predictor import Predictor
    from fakeface.video import VideoReader, analyse_video
    from fakeface.video_encode import pan_zoom_clip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--clip", type=Path, help="measure this clip instead of the generated one")
    parser.add_argument("--clip-dir", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args(argv)
    clip = args.clip or args.clip_dir / "video_1920x1080_60s_25fps.mp4"
    if not clip.exists():
        clip.parent.mkdir(parents=True, exist_ok=True)
        print(f"making {clip} (minutes on 2 cores) ...", flush=True)
        pan_zoom_clip(Image.open(EXAMPLES / "grace_hopper.jpg"), clip, size=(1920, 1080), seconds=60, fps=25,
                      zoom=(1.0, 1.2), pan=(0.2, 0.6), preset="veryfast")
    with VideoReader(clip) as reader:
        info = reader.info
    print(f"clip: {clip} · {info.width}x{info.height} {info.codec}, {info.duration:.0f} s, {info.frame_count} frames, "
          f"{clip.stat().st_size / 1e6:.1f} MB · load average {os.getloadavg()[0]:.2f}")
    predictor = Predictor.load()
    predictor.predict_file(EXAMPLES / "grace_hopper.jpg", heatmap=True)
    before = peak_mb()
    print(f"after loading the model and one still image: RSS {proc_status(os.getpid(), 'VmRSS'):.0f} MB, "
          f"peak {before:.0f} MB")
    t0 = time.perf_counter()
    result = analyse_video(predictor, clip, frames=args.frames, heatmaps=True)
    seconds = time.perf_counter() - t0
    after = peak_mb()
    print(f"after the clip ({args.frames} frames, heat maps on the {len(result.suspicious)} most suspicious, "
          f"{seconds:.1f} s, verdict {result.verdict}): RSS {proc_status(os.getpid(), 'VmRSS'):.0f} MB, peak "
          f"{after:.0f} MB (+{after - before:.0f} MB over the still image's peak) · load average {end_load()[0]:.2f}")


if __name__ == "__main__":
    main()
