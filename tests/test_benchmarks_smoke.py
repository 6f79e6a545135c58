"""The benchmarks still run: their shared helpers, and smoke runs (--quick) of the model and serving benchmarks
on examples/. Figures are not checked, only that every path runs and the JSON holds what the tables show."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _benchutil():
    """benchmarks/benchutil.py, loaded by path (benchmarks/ is not a package)."""
    if "benchutil" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchutil", BENCH / "benchutil.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["benchutil"] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules["benchutil"]


def _run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_the_image_sample_is_fixed_and_a_smaller_one_is_its_start():
    bu = _benchutil()
    five = bu.sample_images(ROOT / "examples", 5, seed=0)
    assert bu.sample_images(ROOT / "examples", 3, seed=0) == five[:3]
    assert bu.sample_images(ROOT / "examples", 5, seed=0) == five
    assert all(p.suffix == ".jpg" for p in five)


def test_ratios_say_which_way_is_better():
    bu = _benchutil()
    assert bu.Ratio("throughput", 2.0, 1.0, True).verdict() == "ours 2.00x better"
    assert bu.Ratio("latency", 2.0, 1.0, False).verdict() == "ours 2.00x worse"
    assert bu.Ratio("latency", 0.5, 1.0, False).verdict() == "ours 2.00x better"
    assert bu.Ratio("missing", None, 1.0, True).verdict() == "n/a"


def test_machine_report_names_the_cpu_and_versions():
    info = _benchutil().machine_info()
    assert info["cpu"] and info["logical_cores"] >= 1 and info["torch"] and info["torch_threads"] >= 1


@pytest.mark.slow
def test_serving_benchmark_runs_the_seed_and_the_floor(tmp_path):
    out = tmp_path / "serving.json"
    done = _run("bench_serving.py", "--quick", "--servers", "seed,noop", "--images", str(ROOT / "examples"),
                "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {r["section"] for r in result["rows"]} == {"seed", "noop"}
    assert all(r["extra"]["errors"] == 0 and r["n"] > 0 for r in result["rows"])
    for server in ("seed", "noop"):
        assert result["servers"][server]["cold_start_s"] > 0 and result["servers"][server]["peak_rss_mb"] > 0
    assert "machine:" in done.stdout and "peak RSS" in done.stdout


@pytest.mark.slow
def test_model_benchmark_runs_both_designs(tmp_path, clip_backbone):
    out = tmp_path / "model.json"
    done = _run("bench_model.py", "--quick", "--no-levers", "--images", str(ROOT / "examples"), "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = {r["name"] for r in json.loads(out.read_text())["rows"]}
    assert {"ours b1", "seed b1", "ours b2", "seed b2"} <= names
    assert "sequential" in done.stdout


@pytest.mark.slow
def test_video_benchmark_prints_the_split(tmp_path):
    out = tmp_path / "video.json"
    done = _run("bench_video.py", "--quick", "--clip-dir", str(tmp_path), "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"end to end (analyse_video)", "decode", "detect", "model"}
    assert all(r["p50"] > 0 for r in rows.values())
    assert "s per clip" in done.stdout and "load average" in done.stdout
