"""End to end on running servers: our app against the seed's design, beside a no-op Gradio app (the floor).

Each server runs alone, in a subprocess on a free port, one after the other: our app (`python app.py`, with
GRADIO_SERVER_PORT), the seed's minimal FastAPI server (benchmarks/seed_server.py, under uvicorn) and a no-op
Gradio app (benchmarks/noop_app.py). For each: the cold start (process start to first answer), then every
channel at 1 and 8 concurrent clients (p50 / p95 latency, requests per second), then the peak RSS of the server
process under that load (VmHWM from /proc/PID/status, descendants included).

Channels: ours REST POST /api/v1/predict and gradio_client /predict; the seed's POST /predict; the no-op app's
gradio_client /predict (the Gradio protocol floor) and POST /api/v1/predict (the REST floor). The clients run as
threads of this process, so on a small machine they take some CPU from the server, equally for every server.

    python benchmarks/bench_serving.py                       # 20 images, 40 requests per setting
    python benchmarks/bench_serving.py --quick               # smoke run
    python benchmarks/bench_serving.py --model DIR --concurrency 1,4,8 --json out/bench_serving.json
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchutil import (ROOT, STAND_IN, Ratio, Row, ServerProcess, apply_quick, common_parser, describe_sample,
                       end_load, free_port, machine_info, print_machine, print_ratios, print_rows, sample_images,
                       save_json, server_env, summary)

BENCH_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S = 600
REQUEST_TIMEOUT = httpx.Timeout(300, connect=2)  # a short connect timeout: a starting server refuses quickly


@dataclass
class Sample:
    """An image file sent as is: REST sends the bytes, gradio_client uploads the file from its path."""

    path: Path
    data: bytes


# --------------------------------------------------------------------------------------------- channels


@dataclass
class Channel:
    """One way of asking a server for a prediction. `kind` "rest" (multipart POST) or "gradio" (gradio_client)."""

    server: str
    name: str
    kind: str
    path: str  # REST route, or the Gradio api_name

    def client(self, url: str):
        if self.kind == "rest":
            return httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT)
        from gradio_client import Client

        return Client(url, verbose=False, analytics_enabled=False)

    def send(self, client, image: Sample) -> str | None:
        """None on a good answer, else what went wrong."""
        try:
            if self.kind == "rest":
                r = client.post(self.path, files={"file": (image.path.name, image.data, "image/jpeg")})
                if r.status_code != 200:
                    return f"HTTP {r.status_code}: {r.text[:120]}"
                return None if "fake_prob" in r.json() else f"unexpected answer {r.text[:120]}"
            from gradio_client import handle_file

            result = client.predict(handle_file(str(image.path)), api_name=self.path)
            return None if isinstance(result, dict) and "label" in result else f"unexpected answer {str(result)[:120]}"
        except Exception as exc:  # noqa: BLE001 - transport errors and gradio_client's own errors alike
            return f"{type(exc).__name__}: {str(exc)[:120]}"

    @staticmethod
    def close(client) -> None:
        client.close()


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_load(channel: Channel, url: str, images: list[Sample], clients: int, per_client: int) -> LoadResult:
    """`clients` threads, each with its own client (made before the clock starts), send `per_client` requests
    back to back, starting together; images are taken round-robin, offset per client."""
    result = LoadResult()
    start = threading.Barrier(clients + 1)
    spans: list[tuple[float, float]] = []

    def worker(k: int) -> None:
        try:
            client = channel.client(url)
        except Exception as exc:  # noqa: BLE001
            with result.lock:
                result.errors.append(f"client: {type(exc).__name__}: {exc}")
            start.wait()
            return
        start.wait()
        began = time.perf_counter()
        for i in range(per_client):
            image = images[(k + i) % len(images)]
            t0 = time.perf_counter()
            error = channel.send(client, image)
            seconds = time.perf_counter() - t0
            with result.lock:
                if error:
                    result.errors.append(error)
                else:
                    result.latencies.append(seconds)
        with result.lock:  # the wall clock is the workers' own: the main thread may wake late after the barrier
            spans.append((began, time.perf_counter()))
        channel.close(client)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    if spans:
        result.wall = max(end for _, end in spans) - min(began for began, _ in spans)
    return result


def row_name(channel: Channel, clients: int) -> str:
    return f"{channel.server}: {channel.name}, {clients} client(s)"


def load_row(channel: Channel, clients: int, result: LoadResult, server_cpu_s: float | None = None) -> Row:
    """`server_cpu_s`: the server's CPU seconds (all its threads and children) over the whole setting."""
    s = summary(result.latencies)
    note = f"{len(result.errors)} errors: {result.errors[0]}" if result.errors else ""
    answered = len(result.latencies) + len(result.errors)
    cpu = server_cpu_s / answered if server_cpu_s is not None and answered else None
    return Row(channel.server, row_name(channel, clients), s["n"], s["p50"], s["p95"], s["mean"],
               len(result.latencies) / result.wall if result.wall else None, "req/s", note,
               extra={"clients": clients, "errors": len(result.errors), "wall_s": result.wall,
                      "server_cpu_s": server_cpu_s}, cpu_mean=cpu)


# ---------------------------------------------------------------------------------------------- servers


def start_server(name: str, model_env: dict, workdir: Path, seed_threads: int | None = None) -> ServerProcess:
    port = free_port()
    env = server_env(port, workdir / "uploads", **model_env)
    threads = ["--threads", str(seed_threads)] if seed_threads else []
    scripts = {"ours": [str(ROOT / "app.py")],
               "seed": [str(BENCH_DIR / "seed_server.py"), "--port", str(port)] + threads,
               "noop": [str(BENCH_DIR / "noop_app.py")]}
    return ServerProcess(name, [sys.executable] + scripts[name], env, workdir, port)


def first_answer(server: ServerProcess, channel: Channel, image: Sample) -> float:
    """Seconds from process start to the first good answer on `channel` (connection refused = not up yet)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n{server.log_tail()}")
            try:
                r = client.post(channel.path, files={"file": (image.path.name, image.data, "image/jpeg")})
                if r.status_code == 200:
                    return time.perf_counter() - server.started
                raise RuntimeError(f"{server.name}: first request got HTTP {r.status_code}: {r.text[:300]}")
            except httpx.TransportError:
                time.sleep(0.1)
    raise RuntimeError(f"{server.name} gave no answer within {START_TIMEOUT_S} s:\n{server.log_tail()}")


def our_model_env(spec: str | None, tmp: Path) -> tuple[dict, str]:
    """Environment naming our model, and its description: --model, $FAKEFACE_MODEL, the bundled model (offline,
    as load_test does), else an untrained stand-in of the default architecture (same computation)."""
    from fakeface.hub import BUNDLED_MODEL_DIR

    spec = spec or os.environ.get("FAKEFACE_MODEL")
    if spec:
        return {"FAKEFACE_MODEL": spec}, spec
    if (BUNDLED_MODEL_DIR / "model.safetensors").exists():
        return {"HF_HUB_OFFLINE": "1"}, f"bundled ({BUNDLED_MODEL_DIR})"
    from fakeface.models import create_model

    folder = tmp / "stand-in-model"
    create_model("clip-vit-b16-probe").save_pretrained(str(folder))
    return {"FAKEFACE_MODEL": str(folder)}, STAND_IN


CHANNELS = {
    "ours": [Channel("ours", "REST POST /api/v1/predict", "rest", "/api/v1/predict"),
             Channel("ours", "gradio_client /predict", "gradio", "/predict")],
    "seed": [Channel("seed", "REST POST /predict", "rest", "/predict")],
    "noop": [Channel("noop", "gradio_client /predict (floor)", "gradio", "/predict"),
             Channel("noop", "REST POST /api/v1/predict (floor)", "rest", "/api/v1/predict")],
}


def bench_server(name: str, model_env: dict, workdir: Path, images: list[Sample], concurrency: list[int],
                 requests: int, seed_threads: int | None = None) -> tuple[list[Row], dict]:
    """Start one server, time its cold start, load every channel at every concurrency, read its peak RSS."""
    channels = CHANNELS[name]
    server = start_server(name, model_env, workdir, seed_threads)
    rows: list[Row] = []
    try:
        cold = first_answer(server, next(c for c in channels if c.kind == "rest"), images[0])
        idle = server.rss_mb()
        print(f"  {name}: first answer {cold:.1f} s after process start (pid {server.proc.pid}, RSS {idle:.0f} MB)",
              flush=True)
        for channel in channels:
            warm = channel.client(server.url)
            channel.send(warm, images[0])  # untimed: the channel's own first-call costs
            channel.close(warm)
            for clients in concurrency:
                per_client = max(1, math.ceil(requests / clients))
                cpu0 = server.cpu_seconds()
                result = run_load(channel, server.url, images, clients, per_client)
                rows.append(load_row(channel, clients, result, server.cpu_seconds() - cpu0))
                cpu = rows[-1].cpu_mean
                print(f"    {rows[-1].name}: {rows[-1].n} answers, p50 "
                      f"{'-' if rows[-1].p50 is None else f'{rows[-1].p50:.3f} s'}, server CPU "
                      f"{'-' if cpu is None else f'{cpu * 1000:.0f} ms'} per request", flush=True)
        peak = server.peak_rss_mb()
        after = server.rss_mb()
        process = {"cold_start_s": cold, "rss_after_first_answer_mb": idle, "peak_rss_mb": peak,
                   "rss_after_load_mb": after, "alive_after_load": server.alive()}
    finally:
        server.stop()
    return rows, process


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.split("\n\n")[0], repeats=False)
    parser.add_argument("--model", default=None,
                        help="our model (folder or Hub id); when absent: $FAKEFACE_MODEL, else the bundled model, "
                             "else an untrained stand-in of the default architecture")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=40,
                        help="requests per channel and concurrency (split among the clients, at least 1 each)")
    parser.add_argument("--servers", default="ours,seed,noop", help="which servers to run, comma-separated")
    parser.add_argument("--seed-threads", type=int, default=None,
                        help="torch threads of the seed's server; when absent: torch's own, as a minimal app has")
    args = parser.parse_args(argv)
    apply_quick(args, parser, requests=3)
    concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(CHANNELS)
    if unknown:
        parser.error(f"unknown server(s) {sorted(unknown)}: choose from {sorted(CHANNELS)}")

    machine = machine_info()
    print_machine(machine)
    paths = sample_images(args.images, args.n_images, args.sample_seed)
    images = [Sample(p, p.read_bytes()) for p in paths]
    print(f"images:  {describe_sample(paths, args.images)}")
    print(f"load:    {args.requests} requests per channel at {concurrency} concurrent client(s); one server at a "
          "time; one untimed request per channel first")

    rows: list[Row] = []
    processes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fakeface-bench-serving-") as tmp:
        tmp = Path(tmp)
        env, description = our_model_env(args.model, tmp) if "ours" in servers else ({}, "")
        if description:
            print(f"ours:    python app.py, model {description}")
        print("seed:    benchmarks/seed_server.py (FastAPI + uvicorn, resnet50-attention fp32, batch 1, torch threads "
              f"{args.seed_threads or 'default'})")
        print("floor:   benchmarks/noop_app.py (Gradio no-op /predict + no-op REST route)\n")
        for name in servers:
            workdir = tmp / name
            workdir.mkdir()
            new_rows, processes[name] = bench_server(name, env if name == "ours" else {}, workdir, images,
                                                     concurrency, args.requests, args.seed_threads)
            rows += new_rows

    print_rows(rows, "latency per request (seconds) and answers per second", time_unit="s")
    print("\nprocesses (one server at a time)")
    print(f"  {'server':<8} {'cold start s':>13} {'RSS after 1st answer MB':>24} {'peak RSS (VmHWM) MB':>20} "
          f"{'RSS after the load MB':>22}")
    for name, p in processes.items():
        print(f"  {name:<8} {p['cold_start_s']:>13.1f} {p['rss_after_first_answer_mb'] or float('nan'):>24.0f} "
              f"{p['peak_rss_mb'] or float('nan'):>20.0f} {p['rss_after_load_mb'] or float('nan'):>22.0f}"
              + ("" if p["alive_after_load"] else "  (DIED under load)"))

    ratios: list[Ratio] = []
    by_name = {r.name: r for r in rows}
    if "ours" in processes and "seed" in processes:
        ratios += [Ratio("cold start", processes["ours"]["cold_start_s"], processes["seed"]["cold_start_s"], False),
                   Ratio("peak RSS", processes["ours"]["peak_rss_mb"], processes["seed"]["peak_rss_mb"], False)]
        for c in concurrency:
            ours = by_name.get(row_name(CHANNELS["ours"][0], c))
            seed = by_name.get(row_name(CHANNELS["seed"][0], c))
            if ours and seed:
                ratios += [Ratio(f"REST p50, {c} client(s)", ours.p50, seed.p50, False),
                           Ratio(f"REST p95, {c} client(s)", ours.p95, seed.p95, False),
                           Ratio(f"REST req/s, {c} client(s)", ours.rate, seed.rate, True)]
        print_ratios(ratios, "ours / seed (REST against the seed's REST)")
    if len(concurrency) > 1:
        low, high = min(concurrency), max(concurrency)
        print(f"\nscaling: requests per second at {high} client(s) / at {low} (same channel)")
        for channels in CHANNELS.values():
            for ch in channels:
                a, b = by_name.get(row_name(ch, low)), by_name.get(row_name(ch, high))
                if a and b and a.rate and b.rate:
                    print(f"  {ch.server}: {ch.name}: {b.rate:.2f} / {a.rate:.2f} = {b.rate / a.rate:.2f}x "
                          f"(p95 {b.p95:.3f} s at {high}, {a.p95:.3f} s at {low})")
    if "ours" in processes and "noop" in processes:
        print("\nabove the protocol floor (ours p50 minus the no-op app's p50, same channel)")
        for ours_ch, floor_ch in zip(CHANNELS["ours"][::-1], CHANNELS["noop"]):
            for c in concurrency:
                ours = by_name.get(row_name(ours_ch, c))
                floor = by_name.get(row_name(floor_ch, c))
                if ours and floor and ours.p50 is not None and floor.p50 is not None:
                    print(f"  {ours_ch.name}, {c} client(s): {ours.p50:.3f} s = floor {floor.p50:.3f} s "
                          f"+ {ours.p50 - floor.p50:.3f} s")

    machine["load_average_end"] = end_load()
    print(f"\nload average at the end: {machine['load_average_end']}")
    save_json(args.json, machine, args, rows, ratios, servers=processes)
    failed = any(r.extra.get("errors") for r in rows) or not all(p["alive_after_load"] for p in processes.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
