"""Model-only speed: our shipped default against the seed's design, on the same decoded images, on CPU.

Ours: the Predictor's model path: the model's views of the face crop through the frozen CLIP ViT-B/16 int8 ONNX
backbone and its linear probe (the shipped default: one 224 px view, no early exit; a model with an early exit
is measured with and without it). The backbone runs one view at a time by design
(its int8 activations are quantised per batch, so batch-mates would shift an image's features): its "batch 8" is
8 images in sequence, and only the probe is batched. Seed: ResNet50 + attention, fp32, Resize/ToTensor/Normalize,
true batches. Both include their own preprocessing of a decoded image; decoding and face detection are not
included here (the lever rows time them separately). Every row gives the CPU time per call beside the wall time.

    python benchmarks/bench_model.py                       # 20 images x 5 repeats, batch 1 / 8 / 32, levers
    python benchmarks/bench_model.py --quick               # smoke run
    python benchmarks/bench_model.py --model DIR --json out/bench_model.json
"""

from __future__ import annotations

import copy
import io
import sys

import torch
from PIL import Image

from benchutil import (Ratio, Row, Times, apply_quick, common_parser, cycle, decode_all, default_model,
                       describe_sample, end_load, latency_row, machine_info, print_machine, print_ratios, print_rows,
                       sample_images, save_json, seed_model, seed_transform, timed, timed_cpu)

SEQUENTIAL_NOTE = "sequential: one view at a time by design"


def time_b1(fn, images, repeats: int) -> Times:
    """Seconds per image at batch 1 (wall, and CPU in .cpu), after one untimed call (first calls build kernels
    and caches)."""
    fn([images[0]])
    pairs = [timed_cpu(fn, [image]) for _ in range(repeats) for image in images]
    return Times([w for w, _ in pairs], [c for _, c in pairs])


def time_batch(fn, images, batch: int, repeats: int) -> Times:
    """Seconds per call on `batch` images (the sample reused round-robin), after one untimed call."""
    batch_images = cycle(images, batch)
    fn(batch_images)
    pairs = [timed_cpu(fn, batch_images) for _ in range(repeats)]
    return Times([w for w, _ in pairs], [c for _, c in pairs])


def seed_runner(model, transform, autocast: bool = False):
    def run(images):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(torch.stack([transform(im) for im in images]))

    return run


def ours_runner(predictor):
    return lambda images: predictor.logits(images)


def without_early_exit(model):
    """The same model answering every image through all its views (the early exit's comparison)."""
    full = copy.deepcopy(model)
    full.remove_early_exit()
    return full


def early_exit_share(predictor, images) -> float:
    """Share of the images the fast probe answers alone (after its first view group, or its first blocks)."""
    model = predictor.model
    exits = [bool(model.exit_mask(torch.from_numpy(predictor.featurizer(im)[None]))[0]) for im in images]
    return sum(exits) / len(exits)


def with_threads(n: int, fn):
    """fn under n torch threads, restoring the previous setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ levers


def decode_rows(paths, repeats: int) -> list[Row]:
    """Full JPEG decode vs PIL draft mode (DCT-domain downscale by 1/2, 1/4, 1/8 while staying >= 448 px)."""
    from fakeface.images import load_image

    blobs = [p.read_bytes() for p in paths]
    # a phone-sized copy shows what draft does for the big uploads; the 600 px sample cannot shrink below 448
    big = io.BytesIO()
    Image.open(io.BytesIO(blobs[0])).convert("RGB").resize((2400, 2400), Image.BICUBIC).save(big, "JPEG", quality=90)

    def full(data):
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size

    def draft(data):
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (448, 448))
            im.load()
            return im.size

    def checked(data):
        return load_image(data).size

    rows = []
    for label, sample in (("sample", blobs), ("2400 px copy", [big.getvalue()])):
        for name, fn in (("full decode", full), ("draft (448, 448) decode", draft),
                         ("fakeface load_image (full + checks)", checked)):
            w, h = fn(sample[0])  # also the untimed warm-up
            times = [timed(fn, data) for _ in range(repeats) for data in sample]
            rows.append(latency_row("decode", f"{name}, {label}", times, note=f"first -> {w}x{h}"))
    return rows


def detector_rows(model, featurizer, images, repeats: int) -> tuple[list[Row], dict]:
    """The face detector's share: predict_image with detector "none" vs "auto", and detect() alone."""
    from fakeface.predictor import Predictor

    rows, shares = [], {}
    plain = Predictor(model, detector="none")
    auto = Predictor(model, detector="auto")
    for p in (plain, auto):
        p._featurizer = featurizer  # one backbone session for both: no second load, same threads
    backend = auto.detector.backend if auto.detector else "none"
    for name, predictor in (("predict_image, detector none", plain),
                            (f"predict_image, detector auto ({backend})", auto)):
        fn = lambda ims, p=predictor: p.predict_image(ims[0])  # noqa: E731
        rows.append(latency_row("detector", f"ours {name}", time_b1(fn, images, repeats)))
    if auto.detector is not None and auto.detector.available:
        detect = lambda ims: auto.detector.detect(ims[0])  # noqa: E731
        rows.append(latency_row("detector", f"face detection alone ({backend})", time_b1(detect, images, repeats)))
        total = rows[1].p50
        shares = {"detector_backend": backend,
                  "detector_share_of_predict": rows[2].p50 / total if total else None}
        rows[2].note = f"{shares['detector_share_of_predict']:.0%} of predict_image (auto)"
    return rows, shares


def ort_thread_rows(model, images, repeats: int) -> list[Row]:
    """Our b1 latency with ONNX Runtime limited to 1 and to 2 intra-op threads."""
    from fakeface.clip_backbone import ClipOnnxEncoder, locate_clip_onnx
    from fakeface.clip_features import ClipFeaturizer
    from fakeface.predictor import Predictor

    rows = []
    path = locate_clip_onnx()
    for threads in (1, 2):
        predictor = Predictor(model, detector="none")
        predictor._featurizer = ClipFeaturizer(model.recipe, ClipOnnxEncoder(path, threads=threads,
                                                                              **model.encoder_options()))
        rows.append(latency_row("levers", f"ours b1, onnxruntime {threads} intra-op thread(s)",
                                time_b1(ours_runner(predictor), images, repeats)))
        del predictor  # free the session before building the next one
    return rows


class Busy:
    """A competing load while something is timed: the backbone encoding one view after another in a background
    thread, as a server's other request does while this one runs its face detector."""

    def __init__(self, encoder):
        import threading

        import numpy as np

        self.encoder, self.pixels = encoder, np.zeros((3, 224, 224), np.float32)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.is_set():
            self.encoder.tokens(self.pixels)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def detector_thread_rows(featurizer, images, repeats: int) -> tuple[list[Row], dict]:
    """MTCNN's torch threads: detect() with 1 thread (the shipped setting) and with torch's own (all cores), on
    a quiet process and with the backbone busy in another thread; and whether the boxes are the same."""
    from fakeface.faces import FaceDetector, available_backends

    if "mtcnn" not in available_backends():  # it runs for photos whose face does not fill the frame
        return [], {}
    one = FaceDetector("mtcnn", torch_threads=1)
    own = FaceDetector("mtcnn", torch_threads=None)
    boxes_1 = [one.detect(im) for im in images]
    boxes_n = [own.detect(im) for im in images]
    same = all(len(a) == len(b) and all(tuple(x) == tuple(y) for x, y in zip(a, b)) for a, b in zip(boxes_1, boxes_n))
    gap = max((abs(u - v) for a, b in zip(boxes_1, boxes_n) for x, y in zip(a, b) for u, v in zip(x, y)), default=0.0)
    n = torch.get_num_threads()
    rows = []
    for busy in (False, True):
        for label, det in (("torch 1 thread", one), (f"torch {n} threads (torch's own)", own)):
            fn = lambda ims, d=det: d.detect(ims[0])  # noqa: E731
            if busy:
                with Busy(featurizer.encoder):
                    times = time_b1(fn, images, repeats)
            else:
                times = time_b1(fn, images, repeats)
            rows.append(latency_row("detector", f"MTCNN detect, {label}, " + ("backbone busy in another thread"
                                                                               if busy else "quiet"), times))
    note = ("boxes identical" if same else f"boxes differ by up to {gap:.2g} px") + f" on {len(images)} images"
    rows[0].note = note
    return rows, {"mtcnn_boxes_identical_1_vs_own_threads": same, "mtcnn_box_max_abs_diff_px": gap}


ARENA_PROBE = """
import sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
from fakeface.clip_backbone import ClipOnnxEncoder
from benchutil import proc_status
import os
enc = ClipOnnxEncoder(threads=int(sys.argv[3]), cpu_mem_arena=sys.argv[2] == "1")
rng = np.random.default_rng(0)
views = [rng.standard_normal((3, 224, 224)).astype(np.float32) for _ in range(int(sys.argv[4]))]
first = enc.tokens(views[0])
rss = [proc_status(os.getpid(), "VmRSS")]
times = []
for v in views:
    t0 = time.perf_counter(); enc.tokens(v); times.append(time.perf_counter() - t0)
    rss.append(proc_status(os.getpid(), "VmRSS"))
np.save(sys.argv[5], first)
print(np.median(times), np.mean(times), rss[0], rss[-1], max(rss), proc_status(os.getpid(), "VmHWM"))
"""


def arena_rows(n_views: int) -> tuple[list[Row], dict]:
    """ONNX Runtime's CPU memory arena on (its default) and off, each in a fresh process: time per view, resident
    memory after the first view and after `n_views` more, and whether the outputs are identical."""
    import subprocess
    import tempfile
    from pathlib import Path

    import numpy as np

    from benchutil import ROOT
    from fakeface.clip_backbone import default_intra_op_threads

    rows, outs, extra = [], {}, {}
    bench_dir = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory() as tmp:
        for arena in (True, False):
            out = Path(tmp) / f"arena{int(arena)}.npy"
            done = subprocess.run([sys.executable, "-c", ARENA_PROBE, str(ROOT), "1" if arena else "0",
                                   str(default_intra_op_threads()), str(n_views), str(out)],
                                  cwd=bench_dir, capture_output=True, text=True, env={**__import__("os").environ,
                                                                                     "PYTHONPATH": bench_dir})
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            p50, mean, rss0, rss1, rss_max, hwm = map(float, done.stdout.split()[-6:])
            outs[arena] = np.load(out)
            name = f"backbone alone, onnxruntime CPU memory arena {'on (default)' if arena else 'off'}"
            rows.append(Row("levers", name, n_views, p50, None, mean, 1 / mean, "view/s",
                            f"RSS {rss0:.0f} -> {rss1:.0f} MB over {n_views} views, peak {hwm:.0f} MB"))
            extra[f"arena_{'on' if arena else 'off'}"] = {"rss_first_mb": rss0, "rss_last_mb": rss1,
                                                        "rss_max_mb": rss_max, "vmhwm_mb": hwm}
    extra["arena_outputs_identical"] = bool(np.array_equal(outs[True], outs[False]))
    rows[1].note += "; outputs " + ("identical" if extra["arena_outputs_identical"] else "DIFFER")
    return rows, extra


def seed_lever_rows(seed, transform, images, repeats: int) -> list[Row]:
    rows = []
    for threads in (1, 2):
        times = with_threads(threads, lambda: time_b1(seed_runner(seed, transform), images, repeats))
        rows.append(latency_row("levers", f"seed b1, torch {threads} thread(s)", times))
    rows.append(latency_row("levers", "seed b1, bf16 autocast", time_b1(seed_runner(seed, transform, True), images,
                                                                       repeats),
                            note="fast only with AMX / AVX512-BF16"))
    return rows


# -------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="our model (folder or Hub id); when absent: $FAKEFACE_MODEL, else the bundled model, "
                             "else an untrained stand-in of the default architecture")
    parser.add_argument("--batch-sizes", default="8,32", help="comma-separated throughput batch sizes")
    parser.add_argument("--batch-repeats", type=int, default=3, help="timed calls per batch size")
    parser.add_argument("--no-levers", action="store_true", help="skip the lever rows")
    args = parser.parse_args(argv)
    apply_quick(args, parser, repeats=1, batch_sizes="2", batch_repeats=1)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]

    machine = machine_info()
    print_machine(machine)
    paths = sample_images(args.images, args.n_images, args.sample_seed)
    print(f"images:  {describe_sample(paths, args.images)}")
    images = decode_all(paths)

    from fakeface.predictor import Predictor

    model, description = default_model(args.model)
    if model.family != "features":
        print(f"note: {description} is a pixel model ({model.arch}), not the frozen-CLIP default", file=sys.stderr)
    ours = Predictor(model, detector="none")  # model only: no face detection
    if model.family == "features":
        ours.featurizer  # load the ONNX backbone now, outside the timings
    seed, transform = seed_model(), seed_transform()
    print(f"ours:    {description} ({model.arch}"
          + (f", views {model.recipe.views}" if model.recipe else "") + ")")
    print("seed:    resnet50-attention fp32, random weights (speed only), Resize((224,224))/ToTensor/Normalize")
    print(f"timing:  {args.repeats} pass(es) over the sample at batch 1; {args.batch_repeats} call(s) per batch size "
          f"{batch_sizes}; one untimed warm-up call before each")

    rows: list[Row] = []
    sequential = SEQUENTIAL_NOTE if model.family == "features" else ""
    rows.append(latency_row("model", "ours b1", time_b1(ours_runner(ours), images, args.repeats)))
    rows.append(latency_row("model", "seed b1", time_b1(seed_runner(seed, transform), images, args.repeats)))
    extra = {}
    if getattr(model, "early_exit", None) is not None:
        share = early_exit_share(ours, images)
        extra["early_exit_share"] = share
        stage = "1 view" if model.exit_block is None else f"block {model.exit_block}"
        rows[0].note = f"early exit: {share:.0%} of the sample after {stage}"
        full = Predictor(without_early_exit(model), detector="none")
        full._featurizer = ours._featurizer
        rows.append(latency_row("model", "ours b1, early exit off (all views)",
                                time_b1(ours_runner(full), images, args.repeats)))
    for b in batch_sizes:
        rows.append(latency_row("model", f"ours b{b}", time_batch(ours_runner(ours), images, b, args.batch_repeats),
                                items_per_call=b, note=sequential))
        rows.append(latency_row("model", f"seed b{b}", time_batch(seed_runner(seed, transform), images, b,
                                                                   args.batch_repeats), items_per_call=b))
    print_rows(rows, "model only, CPU (times per call: one image at b1, the whole batch at bN)")
    if sequential:
        print("  ours bN: the int8 ONNX backbone encodes one view at a time by design (its activations are quantised "
              "per batch),\n  so batch N is N images in sequence; only the linear probe runs batched.")

    by_name = {r.name: r for r in rows}
    ratios = [Ratio("latency b1 (p50)", by_name["ours b1"].p50, by_name["seed b1"].p50, False),
              Ratio("latency b1 (mean)", by_name["ours b1"].mean, by_name["seed b1"].mean, False)]
    ratios += [Ratio(f"throughput b{b} (img/s)", by_name[f"ours b{b}"].rate, by_name[f"seed b{b}"].rate, True)
               for b in batch_sizes]

    if not args.no_levers:
        lever_images = images[:1] if args.quick else images  # --quick: one image is enough to run each path
        lever_rows = seed_lever_rows(seed, transform, lever_images, args.repeats)
        if model.family == "features":
            lever_rows += ort_thread_rows(model, lever_images, args.repeats)
        print_rows(lever_rows, "levers: threads and bf16 (batch 1)")
        det_rows, det_extra = detector_rows(model, ours._featurizer, lever_images, args.repeats)
        extra.update(det_extra)
        if model.family == "features":
            thread_rows, thread_extra = detector_thread_rows(ours._featurizer, lever_images, args.repeats)
            det_rows += thread_rows
            extra.update(thread_extra)
            arena, arena_extra = arena_rows(3 if args.quick else max(10, len(lever_images)))
            lever_rows += arena
            extra.update(arena_extra)
            print_rows(arena, "levers: ONNX Runtime memory arena (fresh process each)")
        print_rows(det_rows, "levers: face detector's share (decoded image -> Prediction)")
        dec_rows = decode_rows(paths, args.repeats)
        print_rows(dec_rows, "levers: JPEG decode alone")
        rows += lever_rows + det_rows + dec_rows

    print_ratios(ratios)
    machine["load_average_end"] = end_load()  # the load may have changed during the run
    print(f"load average at the end: {machine['load_average_end']}")
    save_json(args.json, machine, args, rows, ratios, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
