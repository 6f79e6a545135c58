"""Load test for the Space: N concurrent clients send mixed good and bad requests to `python app.py`.

It starts the app itself in a subprocess (model from --model, else $FAKEFACE_MODEL, else the bundled copy;
--tiny makes an untrained EfficientNet-Lite0 for a smoke run), then runs the requests in rounds and prints,
per round, the failures, latency percentiles and the server's RSS, and at the end the totals and the machine.

A good request must get its answer (REST 200 / a Gradio label); a bad one a specific 4xx error (REST) or an
error message (Gradio). Anything else (5xx, "busy", a timeout, a wrong kind of answer) is a failure. The exit
status is 1 on any failure, on files left behind, or when the server's RSS still grows over the second half
of the rounds (the first half is warm-up: allocator pools and caches fill, then level off).

    python benchmarks/load_test.py                   # 8 clients x 200 requests, the bundled model
    python benchmarks/load_test.py --model DIR_OR_HUB_ID --clients 8 --requests 200 --rounds 5
    python benchmarks/load_test.py --quick --tiny    # seconds: 8 clients x 12 requests, untrained model
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
REST_PATH = "/api/v1/predict"
RSS_TOLERANCE_MB = 64  # growth over the second half of the rounds beyond this (and 5%) counts as a leak


# --------------------------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Payload:
    name: str
    data: bytes
    error: str | None = None  # phrase the error must hold; None for a good image


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _bomb_png(size: int) -> bytes:
    """A valid all-black 1-bit PNG of size x size pixels that compresses to almost nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (size + 7) // 8)
    packer = zlib.compressobj(9)
    stream = b"".join(packer.compress(row * 1000) for _ in range(size // 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def payloads(quick: bool) -> tuple[list[Payload], list[Payload]]:
    """(good, bad) request bodies, made once: photos of a few sizes and formats, and the usual bad files."""
    exif = Image.Exif()
    exif[0x0112] = 6
    big = (960, 720) if quick else (2000, 1500)
    good = [
        Payload("small.jpg", _encode(_noise(256, 256, 1), "JPEG", quality=90)),
        Payload("photo.jpg", _encode(_noise(*big, 2), "JPEG", quality=85)),
        Payload("face.png", _encode(_noise(320, 400, 3), "PNG")),
        Payload("rotated.jpg", _encode(_noise(400, 300, 4), "JPEG", quality=90, exif=exif)),
        Payload("alpha.png", _encode(_noise(200, 200, 5).convert("RGBA"), "PNG")),
        Payload("photo.webp", _encode(_noise(300, 300, 6), "WEBP", quality=80)),
    ]
    jpeg = good[0].data
    bad = [
        Payload("empty.jpg", b"", "empty file"),
        Payload("notes.png", b"<html><body>not an image</body></html>", "not an image"),
        Payload("truncated.jpg", jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        Payload("random.jpg", os.urandom(4096), "not an image"),
        Payload("bomb.png", _bomb_png(12000), "too large"),
    ]
    return good, bad


# ----------------------------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_model(folder: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from fakeface.models import create_model

    create_model("efficientnet-lite0", pretrained=False).save_pretrained(str(folder))
    return str(folder)


class Server:
    """`python app.py` in a subprocess, working in a temp folder, logging to a file there."""

    def __init__(self, model: str | None, workdir: Path, port: int):
        self.uploads = workdir.parent / "gradio"  # its own upload folder, so leftovers can be counted
        env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
               "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT), "GRADIO_TEMP_DIR": str(self.uploads)}
        if model:
            env["FAKEFACE_MODEL"] = model
        else:
            env.pop("FAKEFACE_MODEL", None)
            env["HF_HUB_OFFLINE"] = "1"  # no model named: the bundled copy, not whatever the Hub has today
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=workdir, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/config", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the app did not start within {timeout:.0f} s:\n{self.log_tail()}")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def log_tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


# ---------------------------------------------------------------------------------------------- clients


@dataclass
class Tally:
    latencies_good: list[float] = field(default_factory=list)
    latencies_all: list[float] = field(default_factory=list)
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, good: bool, seconds: float, failure: str | None) -> None:
        with self.lock:
            self.requests += 1
            self.latencies_all.append(seconds)
            if good and failure is None:
                self.latencies_good.append(seconds)
            if failure:
                self.failures.append(failure)


# Every answer a good image may get (predictor.decide's headlines; NO FACE for an image without a face).
ANSWERS = ("REAL", "UNCERTAIN", "FAKE", "NO FACE")


def _check_rest(r: httpx.Response, item: Payload) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return f"REST {item.name}: {r.status_code} without JSON"
    if item.error is None:
        if r.status_code != 200 or body.get("headline") not in ANSWERS:
            return f"REST {item.name}: {r.status_code} {str(body)[:120]}"
    elif not (400 <= r.status_code < 500) or item.error not in body.get("error", ""):
        return f"REST {item.name} (bad): {r.status_code} {str(body)[:120]}"
    return None


def _send_gradio(client, path: Path, item: Payload) -> str | None:
    from gradio_client import handle_file

    try:
        result = client.predict(handle_file(str(path)), api_name="/predict")
    except Exception as exc:  # noqa: BLE001 - gradio_client raises AppError and others
        if item.error is not None and item.error in str(exc):
            return None
        return f"Gradio {item.name}: {type(exc).__name__}: {str(exc)[:120]}"
    if item.error is not None:
        return f"Gradio {item.name} (bad): answered {result}"
    return None if result.get("label") in ANSWERS else f"Gradio {item.name}: {result}"


def run_client(url: str, plan: list[tuple[Payload, str]], files: dict[str, Path], tally: Tally,
               start_round: threading.Barrier, rounds: int) -> None:
    from gradio_client import Client

    gradio = Client(url, verbose=False) if any(channel == "gradio" for _, channel in plan) else None
    per_round = -(-len(plan) // rounds)
    with httpx.Client(timeout=180) as http:
        for r in range(rounds):
            start_round.wait()
            for item, channel in plan[r * per_round:(r + 1) * per_round]:
                t0 = time.perf_counter()
                try:
                    if channel == "rest":
                        resp = http.post(f"{url}{REST_PATH}", files={"file": (item.name, item.data)})
                        failure = _check_rest(resp, item)
                    else:
                        failure = _send_gradio(gradio, files[item.name], item)
                except httpx.HTTPError as exc:
                    failure = f"{channel} {item.name}: {type(exc).__name__}: {exc}"
                tally.add(item.error is None, time.perf_counter() - t0, failure)
            start_round.wait()  # the main thread samples RSS between rounds


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " · load average %.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return f"{cpu} · {os.cpu_count()} cores ({usable} usable) · {platform.system()} {platform.release()}{load}"


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("FAKEFACE_MODEL"),
                        help="model folder or Hub id (default: $FAKEFACE_MODEL, else the bundled model)")
    parser.add_argument("--tiny", action="store_true", help="serve an untrained EfficientNet-Lite0 (smoke run)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    parser.add_argument("--rounds", type=int, default=5, help="RSS is sampled after each round")
    parser.add_argument("--bad-share", type=float, default=0.3, help="share of bad files")
    parser.add_argument("--gradio-share", type=float, default=0.25, help="share sent through gradio_client /predict")
    parser.add_argument("--quick", action="store_true", help="8 clients x 12 requests in 3 rounds, smaller photos")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = min(args.requests, 12), min(args.rounds, 3)

    good, bad = payloads(args.quick)
    rng = random.Random(args.seed)
    plans = [[(rng.choice(bad) if rng.random() < args.bad_share else rng.choice(good),
               "gradio" if rng.random() < args.gradio_share else "rest") for _ in range(args.requests)]
             for _ in range(args.clients)]

    with tempfile.TemporaryDirectory(prefix="fakeface-load-") as tmp:
        tmp = Path(tmp)
        files = {}
        for item in good + bad:
            files[item.name] = tmp / "payloads" / item.name
            files[item.name].parent.mkdir(exist_ok=True)
            files[item.name].write_bytes(item.data)
        model = _tiny_model(tmp / "tiny-model") if args.tiny else args.model
        workdir = tmp / "cwd"
        workdir.mkdir()
        print(f"machine: {machine()}")
        print(f"model:   {model or 'bundled (fakeface/default_model)'}")
        server = Server(model, workdir, _free_port())
        try:
            t0 = time.perf_counter()
            try:
                server.wait_ready()
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"server:  {server.url} (pid {server.proc.pid}) ready in {time.perf_counter() - t0:.1f} s, "
                  f"RSS {server.rss_mb():.0f} MB")
            probe = httpx.post(f"{server.url}{REST_PATH}", files={"file": ("probe.jpg", good[0].data)}, timeout=300)
            print(f"serving: {probe.json().get('model', probe.text[:200])}")
            print(f"load:    {args.clients} clients x {args.requests} requests in {args.rounds} rounds "
                  f"({args.bad_share:.0%} bad files, {args.gradio_share:.0%} through gradio_client)\n")
            tally, rss = Tally(), []
            barrier = threading.Barrier(args.clients + 1)
            threads = [threading.Thread(target=run_client, daemon=True,
                                        args=(server.url, plans[i], files, tally, barrier, args.rounds))
                       for i in range(args.clients)]
            for t in threads:
                t.start()
            print(f"{'round':>5} {'requests':>9} {'failures':>9} {'p50 s':>7} {'p95 s':>7} {'req/s':>7} {'RSS MB':>8}")
            started = time.perf_counter()
            for r in range(args.rounds):
                seen_req, seen_lat, seen_fail = tally.requests, len(tally.latencies_good), len(tally.failures)
                barrier.wait()  # round starts
                t_round = time.perf_counter()
                barrier.wait()  # round ends
                elapsed = time.perf_counter() - t_round
                rss.append(server.rss_mb())
                lat = tally.latencies_good[seen_lat:]
                n = tally.requests - seen_req
                print(f"{r + 1:>5} {n:>9} {len(tally.failures) - seen_fail:>9} {percentile(lat, 50):>7.3f} "
                      f"{percentile(lat, 95):>7.3f} {n / elapsed:>7.1f} {rss[-1]:>8.0f}", flush=True)
            wall = time.perf_counter() - started
            for t in threads:
                t.join(timeout=60)
            alive = server.proc.poll() is None
            leftovers = sorted(p.name for p in workdir.iterdir() if p.name != "server.log")
            examples = {p.name for p in (ROOT / "examples").glob("*")}
            uploads_left = sorted(p.name for p in server.uploads.rglob("*")
                                  if p.is_file() and p.name in files and p.name not in examples)
        finally:
            server.stop()

    settled = rss[(len(rss) - 1) // 2]
    growth = rss[-1] - settled
    grew = growth > max(RSS_TOLERANCE_MB, 0.05 * settled)
    print(f"\nrequests:  {tally.requests} in {wall:.1f} s ({tally.requests / wall:.1f} req/s)")
    print(f"good:      p50 {percentile(tally.latencies_good, 50):.3f} s · p95 {percentile(tally.latencies_good, 95):.3f} s"
          f" · max {max(tally.latencies_good, default=float('nan')):.3f} s")
    print(f"all:       p95 {percentile(tally.latencies_all, 95):.3f} s")
    print(f"failures:  {len(tally.failures)}")
    for failure in tally.failures[:20]:
        print(f"  - {failure}")
    print(f"RSS:       {' -> '.join(f'{v:.0f}' for v in rss)} MB (second half: {growth:+.0f} MB, "
          f"{'GREW' if grew else 'flat'}; whole run {rss[-1] - rss[0]:+.0f} MB)")
    print(f"server:    {'still up' if alive else 'DIED'}; files left in its CWD: {leftovers or 'none'}; "
          f"uploads left: {uploads_left or 'none'}")
    print(f"machine:   {machine()}")
    return 1 if tally.failures or grew or not alive or leftovers or uploads_left else 0


if __name__ == "__main__":
    sys.exit(main())
