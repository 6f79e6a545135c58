"""Peak memory of the served app on one huge upload: `python app.py` in a subprocess, one ordinary photo, then
an 8000x8000 JPEG (64 MP, under the 80 MP limit) through REST, gradio_client /predict and /analyse (the page's
event: heat map and face boxes too). Prints the server's VmHWM (peak resident memory, descendants included)
after each step.

    HF_HUB_OFFLINE=1 python benchmarks/bench_huge_image.py            # the bundled model
    python benchmarks/bench_huge_image.py --side 6000 --json out/bench/huge.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from benchutil import ROOT, ServerProcess, free_port, server_env  # noqa: E402

PHOTO = ROOT / "examples" / "two_faces.jpg"


def huge_jpeg(side: int) -> bytes:
    """The two-faces example stretched to side x side: a photo's texture, faces to find, a few MB as JPEG."""
    buf = io.BytesIO()
    Image.open(PHOTO).convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def wait_for(server: ServerProcess, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise SystemExit(f"the app exited:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/config", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"the app did not start within {timeout_s:.0f} s:\n{server.log_tail()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=8000, help="the huge JPEG's width and height")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="fakeface-huge-"))
    data = huge_jpeg(args.side)
    huge = work / f"huge_{args.side}.jpg"
    huge.write_bytes(data)
    port = free_port()
    server = ServerProcess("app", [sys.executable, str(ROOT / "app.py")], server_env(port, work / "uploads"), work,
                           port)
    figures = {"side": args.side, "jpeg_bytes": len(data)}
    try:
        wait_for(server)
        steps = [
            ("first_photo_rest", lambda: httpx.post(f"{server.url}/api/v1/predict", timeout=600,
                                                    files={"file": (PHOTO.name, PHOTO.read_bytes())}).json()),
            ("huge_rest", lambda: httpx.post(f"{server.url}/api/v1/predict", timeout=600,
                                             files={"file": (huge.name, data)}).json()),
            ("huge_gradio_predict", lambda: Client(server.url, verbose=False).predict(
                handle_file(str(huge)), api_name="/predict")),
            ("huge_gradio_analyse", lambda: Client(server.url, verbose=False, download_files=False).predict(
                handle_file(str(huge)), api_name="/analyse")[0]),
        ]
        for name, step in steps:
            start = time.perf_counter()
            answer = step()
            seconds = time.perf_counter() - start
            peak = server.peak_rss_mb()
            figures[name] = {"seconds": round(seconds, 2), "peak_rss_mb": round(peak or 0)}
            headline = answer.get("headline") or answer.get("label")
            print(f"{name:<22} {seconds:6.1f} s   peak RSS so far {peak:6.0f} MB   answer {headline}", flush=True)
    finally:
        server.stop()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
