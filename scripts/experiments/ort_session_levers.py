"""ONNX Runtime session settings for the one 224 px CLIP view, A/B interleaved in one process (issue 15).

    OMP_NUM_THREADS=1 python scripts/experiments/ort_session_levers.py --repeats 25

Settings: pool threads spinning or sleeping (`session.intra_op.allow_spinning`), all 12 block outputs or only
the 4 the shipped recipe reads, `session.dynamic_block_base` 2 / 4. Each setting runs in a process of its own
(spinning pool threads of one session would slow another's runs), the settings taking turns for --rounds
rounds; runs are spaced by --gap-ms, as requests arrive in a server. Every setting's outputs are checked
against the shipped setting's.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fakeface.clip_backbone import DEFAULT_CACHE, _with_block_outputs, locate_clip_onnx  # noqa: E402

SHIPPED_LAYERS = (5, 7, 9, 11)


def session(model, spinning: bool, extra: dict) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    for key, value in extra.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


SETTINGS = {  # name: (spinning, only the shipped recipe's 4 outputs, extra config entries)
    "spinning, 12 outputs (shipped)": (True, False, {}),
    "sleeping, 12 outputs": (False, False, {}),
    "spinning, 4 outputs": (True, True, {}),
    "sleeping, 4 outputs": (False, True, {}),
    "spinning, dynamic_block_base 4": (True, False, {"session.dynamic_block_base": "4"}),
}


def run_one(name: str, repeats: int, gap_ms: float) -> dict:
    """This process: one session with setting `name`; the wall and CPU times of `repeats` runs, and a digest
    of the outputs."""
    import hashlib

    spinning, only_four, extra = SETTINGS[name]
    model, names = _with_block_outputs(locate_clip_onnx(), DEFAULT_CACHE)
    outputs = [names[k] for k in SHIPPED_LAYERS] if only_four else names
    sess = session(model, spinning, extra)
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)}
    result = dict(zip(outputs, sess.run(outputs, feed)))
    digest = hashlib.sha1(b"".join(result[names[k]].tobytes() for k in SHIPPED_LAYERS)).hexdigest()
    wall, cpu = [], []
    for _ in range(repeats):
        time.sleep(gap_ms / 1000)
        t0, c0 = time.perf_counter(), time.process_time()
        sess.run(outputs, feed)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall": wall, "cpu": cpu, "digest": digest}


def main() -> None:
    import json
    import subprocess

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gap-ms", type=float, default=20.0)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the child process's setting
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.repeats, args.gap_ms)))
        return
    wall = {name: [] for name in SETTINGS}
    cpu = {name: [] for name in SETTINGS}
    digests = set()
    for _ in range(args.rounds):
        for name in SETTINGS:
            out = subprocess.run([sys.executable, __file__, "--one", name, "--repeats", str(args.repeats),
                                  "--gap-ms", str(args.gap_ms)], capture_output=True, text=True, check=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            wall[name] += got["wall"]
            cpu[name] += got["cpu"]
            digests.add(got["digest"])
    assert len(digests) == 1, "the settings' outputs differ"
    print(f"one view; each setting in its own process, {args.rounds} rounds x {args.repeats} runs, "
          f"{args.gap_ms:.0f} ms apart; the shipped recipe's outputs identical in every setting")
    for name in SETTINGS:
        print(f"  {name:34s} p50 {1000 * statistics.median(wall[name]):5.1f} ms, "
              f"CPU {1000 * statistics.median(cpu[name]):5.1f} ms")


if __name__ == "__main__":
    main()
