"""A plain REST load for profiling a running app (e.g. with py-spy): N sequential POSTs of ciplab photos.

    GRADIO_SERVER_PORT=7991 python app.py &
    py-spy record -r 200 -d 25 --format raw --threads --idle -o prof.txt -p $(pgrep -f "python app.py") &
    python scripts/experiments/rest_loop.py http://127.0.0.1:7991 300
"""

import argparse
import statistics
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("n", type=int)
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "ciplab" / "real")
    args = ap.parse_args()
    datas = [f.read_bytes() for f in sorted(args.images.glob("*.jpg"))[:20]]
    client = httpx.Client(timeout=60)
    times = []
    for i in range(args.n):
        t0 = time.perf_counter()
        reply = client.post(args.url + "/api/v1/predict", files={"file": ("a.jpg", datas[i % len(datas)], "image/jpeg")})
        times.append(time.perf_counter() - t0)
        reply.raise_for_status()
    print(f"{args.n} requests: p50 {1000 * statistics.median(times):.1f} ms, mean {1000 * statistics.mean(times):.1f} ms")


if __name__ == "__main__":
    main()
