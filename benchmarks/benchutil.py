"""Shared parts of the benchmarks: the machine report, the image sample, the seed's design, timing statistics,
tables, ratios, JSON output and server subprocesses. Not a benchmark itself.

The seed's design (the project this one grew from) is measured beside ours on the same images: ResNet50 +
spatial attention (`create_model("resnet50-attention", pretrained=False)`: the same architecture, and weights do
not change speed), fp32, torchvision Resize((224, 224)) / ToTensor / Normalize, batch 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere, installed or not
    sys.path.insert(0, str(ROOT))

SHARED_IMAGES = ROOT.parent / "shared" / "data" / "ciplab"
EXAMPLES = ROOT / "examples"
IMAGE_SUFFIXES = (".jpg", ".jpeg")  # held-out-like uploads are JPEGs; decode timings assume JPEG
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEED_ARCH = "resnet50-attention"
STAND_IN = "untrained clip-vit-b16-probe stand-in (no bundled model yet; same computation)"


# ------------------------------------------------------------------------------------------------- options


def default_images() -> Path:
    return SHARED_IMAGES if SHARED_IMAGES.is_dir() else EXAMPLES


def common_parser(description: str, repeats: bool = True) -> argparse.ArgumentParser:
    """Options every benchmark takes (bench_serving counts requests instead of repeats)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=Path, default=default_images(),
                        help="folder of JPEGs (searched recursively); a fixed seeded sample is used")
    parser.add_argument("--n-images", type=int, default=20, help="sample size")
    if repeats:
        parser.add_argument("--repeats", type=int, default=5, help="timed passes over the sample")
    parser.add_argument("--sample-seed", type=int, default=0, help="random seed of the image sample")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also save the results here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 images, fewer repeats, smaller batches (options given explicitly win); "
                             "figures not meaningful")
    return parser


def apply_quick(args, parser: argparse.ArgumentParser, **overrides) -> None:
    """--quick: 3 images, plus each script's own reductions (repeats, batches, requests), for the options left
    at their defaults: an option given on the command line wins."""
    if args.quick:
        overrides = {"n_images": 3, **overrides}
        for name, value in overrides.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)


# ---------------------------------------------------------------------------------------------- the machine


def _cpuinfo() -> dict:
    info = {"model": platform.processor() or "unknown", "physical_cores": None, "flags": set()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    cores = set()
    physical = core = None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name":
            info["model"] = value
        elif key == "flags" and not info["flags"]:
            info["flags"] = set(value.split())
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
            cores.add((physical, core))
    info["physical_cores"] = len(cores) or None
    return info


def _cgroup_cpus() -> float | None:
    """The container's CPU quota in cores (a Space's limit often hides behind a bigger host), or None."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed
        return None


def _ort_threads():
    try:
        from fakeface.clip_backbone import default_intra_op_threads

        return default_intra_op_threads()
    except Exception:  # noqa: BLE001 - onnxruntime missing: the report still prints
        return None


def machine_info() -> dict:
    import torch

    cpu = _cpuinfo()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    info = {
        "cpu": cpu["model"],
        "logical_cores": os.cpu_count(),
        "physical_cores": cpu["physical_cores"],
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cgroup_cpu_quota": _cgroup_cpus(),
        "cpu_flags": [f for f in wanted if f in cpu["flags"]],  # bf16/int8 speed depends on these
        "memory_gb": mem_gb,
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "onnxruntime": _version("onnxruntime"),
        "gradio": _version("gradio"),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        # what fakeface.clip_backbone.ClipOnnxEncoder uses unless told: one per usable core ($FAKEFACE_ORT_THREADS)
        "onnxruntime_intra_op_threads": _ort_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def end_load() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def print_machine(info: dict) -> None:
    quota = f", cgroup quota {info['cgroup_cpu_quota']:g} CPUs" if info["cgroup_cpu_quota"] else ""
    load = info["load_average"]
    print(f"machine: {info['cpu']} · {info['logical_cores']} logical / {info['physical_cores']} physical cores "
          f"({info['usable_cores']} usable{quota}) · {info['memory_gb']} GB · {info['os']}")
    print(f"         flags {' '.join(info['cpu_flags']) or 'none of interest'} · load average "
          f"{' '.join(f'{v:.2f}' for v in load) if load else 'n/a'}"
          + (" (busy: figures are not meaningful)" if load and load[0] > 0.5 * (info["usable_cores"] or 1) else ""))
    print(f"         python {info['python']} · torch {info['torch']} ({info['torch_threads']} threads, "
          f"{info['torch_interop_threads']} inter-op) · torchvision {info['torchvision']} · onnxruntime "
          f"{info['onnxruntime']} (intra-op threads: {info['onnxruntime_intra_op_threads']}) · gradio {info['gradio']}"
          + (f" · CUDA {info['cuda']}" if info["cuda"] else " · no CUDA"))


# ------------------------------------------------------------------------------------------------- images


def sample_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """A fixed sample of n JPEGs under `folder`: the same seed gives the same files, and a smaller n gives the
    first files of a larger sample (so --quick uses a subset of the full run's images)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"--images: {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SystemExit(f"--images: no JPEG under {folder}")
    order = random.Random(seed).sample(files, len(files))
    return order[:n]


def describe_sample(paths: list[Path], folder: Path) -> str:
    from PIL import Image

    sizes = sorted({Image.open(p).size for p in paths})
    shown = ", ".join(f"{w}x{h}" for w, h in sizes[:4]) + (" ..." if len(sizes) > 4 else "")
    return f"{len(paths)} JPEGs from {folder} (seeded sample; sizes {shown})"


def decode_all(paths: list[Path]):
    """Images decoded once, the project's way (fakeface.images.load_image: upright RGB), for model-only timings."""
    from fakeface.images import load_image

    return [load_image(p) for p in paths]


def cycle(items: list, n: int) -> list:
    """n items taken round-robin from `items` (a batch bigger than the sample reuses images)."""
    return [items[i % len(items)] for i in range(n)]


# ---------------------------------------------------------------------------------------- the seed's design


def seed_transform():
    """The seed's preprocessing: torchvision (v1) Resize((224, 224)), ToTensor, ImageNet Normalize."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def seed_model():
    """The seed's architecture in eval mode, fp32; random weights (speed does not depend on them)."""
    from fakeface.models import create_model

    return create_model(SEED_ARCH, pretrained=False).eval()


# ------------------------------------------------------------------------------------------- our default model


def default_model(spec: str | None):
    """(model, description) of the shipped default: --model / $FAKEFACE_MODEL / the bundled copy; when none is
    there yet, an untrained clip-vit-b16-probe with the default feature recipe (the same computation: the probe is
    one linear layer whatever its weights)."""
    from fakeface.errors import FakefaceError
    from fakeface.hub import load_model
    from fakeface.models import create_model

    spec = spec or os.environ.get("FAKEFACE_MODEL")
    try:
        model, source = load_model(spec)
        return model, source.describe()
    except FakefaceError as exc:
        if spec:
            raise SystemExit(f"--model: {exc}")
        model = create_model("clip-vit-b16-probe")
        return model, STAND_IN


# ---------------------------------------------------------------------------------------------- statistics


@dataclass
class Row:
    """One line of a results table. Times in seconds; `rate` in `unit` per second."""

    section: str
    name: str
    n: int = 0
    p50: float | None = None
    p95: float | None = None
    mean: float | None = None
    rate: float | None = None
    unit: str = "img/s"
    note: str = ""
    extra: dict = field(default_factory=dict)
    cpu_mean: float | None = None  # CPU seconds per call (all threads of the process), beside the wall time


class Times(list):
    """Wall seconds per call, with the process's CPU seconds per call in `.cpu` (time.process_time: every
    thread of this process, so ONNX Runtime's and torch's worker threads count)."""

    def __init__(self, wall=(), cpu=()):
        super().__init__(wall)
        self.cpu = list(cpu)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def timed_cpu(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def summary(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0, "p50": None, "p95": None, "mean": None}
    arr = np.asarray(seconds, dtype=float)
    return {"n": len(arr), "p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "mean": float(arr.mean())}


def latency_row(section: str, name: str, seconds: list[float], items_per_call: int = 1, unit: str = "img/s",
                note: str = "") -> Row:
    """A row from per-call times; the rate is items per second over the whole run (items / mean call time):
    with early exit the call times are bimodal and the median would hide the fast calls."""
    s = summary(seconds)
    rate = items_per_call / s["mean"] if s["mean"] else None
    cpu = getattr(seconds, "cpu", None)
    return Row(section, name, s["n"], s["p50"], s["p95"], s["mean"], rate, unit, note,
               cpu_mean=float(np.mean(cpu)) if cpu else None)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def print_rows(rows: list[Row], title: str, time_unit: str = "ms") -> None:
    """A plain-text table; `time_unit` "ms" or "s"."""
    fmt = _ms if time_unit == "ms" else (lambda v: "-" if v is None else f"{v:.3f}")
    width = max([len(r.name) for r in rows] + [10])
    print(f"\n{title}")
    print(f"  {'':<{width}} {'n':>4} {'p50 ' + time_unit:>9} {'p95 ' + time_unit:>9} {'mean ' + time_unit:>9} "
          f"{'cpu ' + time_unit:>9} {'rate':>9} {'unit':<7} note")
    for r in rows:
        print(f"  {r.name:<{width}} {r.n:>4} {fmt(r.p50):>9} {fmt(r.p95):>9} {fmt(r.mean):>9} {fmt(r.cpu_mean):>9} "
              f"{_rate(r.rate):>9} {r.unit:<7} {r.note}")
    if any(r.cpu_mean is not None for r in rows):
        print("  (cpu: CPU time per call, mean; in-process rows count this process's threads, server rows the "
              "server process and its children, divided by its answers)")


@dataclass
class Ratio:
    name: str
    ours: float | None
    seed: float | None
    higher_is_better: bool  # throughput: True; latency, memory, start time: False

    @property
    def value(self) -> float | None:
        if not self.ours or not self.seed:
            return None
        return self.ours / self.seed

    def verdict(self) -> str:
        v = self.value
        if v is None:
            return "n/a"
        better = v > 1 if self.higher_is_better else v < 1
        factor = v if v >= 1 else 1 / v
        if abs(factor - 1) < 0.05:
            return "about the same"
        return f"ours {factor:.2f}x {'better' if better else 'worse'}"


def print_ratios(ratios: list[Ratio], title: str = "ours / seed") -> None:
    width = max([len(r.name) for r in ratios] + [10])
    print(f"\n{title}")
    for r in ratios:
        v = r.value
        print(f"  {r.name:<{width}} {('-' if v is None else f'{v:.3f}'):>8}   {r.verdict()}"
              f"   ({'higher' if r.higher_is_better else 'lower'} is better)")


def save_json(path: Path | None, machine: dict, args, rows: list[Row], ratios: list[Ratio], **extra) -> None:
    if path is None:
        return
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    payload = {"machine": machine, "config": config, "rows": [asdict(r) for r in rows],
               "ratios": [{**asdict(r), "ours_over_seed": r.value, "verdict": r.verdict()} for r in ratios], **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nsaved {path}")


# ------------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int, key: str) -> float | None:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in MB, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15 of stat(5), after "pid (comm)"


def child_pids(pid: int) -> list[int]:
    """Every descendant of pid (a server that forks helpers uses their memory too)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{parent}/task/{task}/children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


class ServerProcess:
    """A server in a subprocess, logging to a file; `started` is taken just before the process is created, so
    a cold start counts the interpreter, imports, model load and warm-up."""

    def __init__(self, name: str, argv: list[str], env: dict, cwd: Path, port: int):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(cwd) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_mb(self) -> float | None:
        """VmHWM of the server and its descendants: the most resident memory each has had."""
        values = [proc_status(p, "VmHWM") for p in [self.proc.pid] + child_pids(self.proc.pid)]
        values = [v for v in values if v is not None]
        return sum(values) if values else None

    def rss_mb(self) -> float | None:
        """VmRSS of the server and its descendants now."""
        values = [proc_status(p, "VmRSS") for p in [self.proc.pid] + child_pids(self.proc.pid)]
        values = [v for v in values if v is not None]
        return sum(values) if values else None

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server and its living descendants."""
        return sum(v for v in (proc_cpu_seconds(p) for p in [self.proc.pid] + child_pids(self.proc.pid)) if v)

    def log_tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def server_env(port: int, upload_dir: Path, **extra) -> dict:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(upload_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.update({k: v for k, v in extra.items() if v is not None})
    return env
