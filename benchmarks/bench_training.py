"""Training throughput: pixel models (images/s through full training steps at 224 px) and the frozen CLIP
backbone (images featurized per second), on CPU, and on CUDA when present.

Pixel models run the training loop's step (fakeface.training: forward, the preset's loss, backward, AdamW) on
real images already transformed, so the rows time the model; "data" rows time the per-image work the loader adds
(decode + the project's train transform) on one CPU core. The step runs as `fit` runs it: bf16 autocast and
channels_last on CUDA or a CPU with AMX (`--precision auto`), with an fp32 row beside each (the seed's own
precision); elsewhere fp32, with a channels_last lever row. The CLIP backbone is an int8 ONNX model on ONNX Runtime's CPU
provider, so it runs on CPU whatever the machine has; its features are computed once per image and cached, and
only the linear probe is trained on them (its row: feature vectors per second through probe training steps).

    python benchmarks/bench_training.py                     # batch 24 (the presets'), 5 steps, all pixel archs
    python benchmarks/bench_training.py --quick             # smoke run
    python benchmarks/bench_training.py --device cuda --batch-size 64 --json out/bench_training.json
"""

from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch

from benchutil import (SEED_ARCH, Ratio, Row, apply_quick, common_parser, cycle, decode_all, default_model,
                       describe_sample, end_load, latency_row, machine_info, print_machine, print_ratios, print_rows,
                       sample_images, save_json, timed)

PIXEL_ARCHS = ("efficientnet-lite0", "efficientnet-lite0-attention", SEED_ARCH)
PRESET_OF = {SEED_ARCH: "seed"}  # the others train with the lite0 preset's loss and optimiser
TRAIN_SHARE = 0.70  # of the images: the default split is 70 / 15 / 15 (train / validation / test)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ pixel models


def train_step_row(arch: str, device: torch.device, tensors: list, batch: int, steps: int, mixed: bool,
                   channels_last: bool | None = None) -> Row:
    """Images per second through `steps` training steps (after one untimed step) of a fresh model. `mixed`: bf16
    autocast, and channels_last unless `channels_last` says otherwise."""
    from fakeface.models import create_model
    from fakeface.training import loss_fn, make_config, train_step

    config = make_config(PRESET_OF.get(arch, "lite0"))
    torch.manual_seed(0)
    channels_last = mixed if channels_last is None else channels_last
    model = create_model(arch, pretrained=False).to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    criterion = loss_fn(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x = torch.stack(cycle(tensors, batch)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.arange(batch) % 2).float().to(device)

    def step():
        train_step(model, x, y, criterion, optimizer, mixed)
        sync(device)

    step()
    times = [timed(step) for _ in range(steps)]
    precision = " + ".join((["bf16 autocast"] if mixed else ["fp32"]) + (["channels_last"] if channels_last else []))
    seed = " (the seed's design)" if arch == SEED_ARCH else ""
    row = latency_row(f"train {device.type}", f"{arch}{seed}, {precision}, batch {batch}", times,
                      items_per_call=batch, note="time per step")
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def data_rows(paths, repeats: int) -> list[Row]:
    """Per-image loader work on one core: decode + the train transform (with and without robustness steps)."""
    from fakeface.images import load_image
    from fakeface.models import architecture
    from fakeface.transforms import train_transform

    spec = architecture(SEED_ARCH).default_config()
    blobs = [p.read_bytes() for p in paths]
    rows = []
    for robust in (False, True):
        transform = train_transform(spec.input_size, spec.mean, spec.std, robust=robust)
        work = lambda data, t=transform: t(load_image(data))  # noqa: E731
        work(blobs[0])
        times = [timed(work, data) for _ in range(repeats) for data in blobs]
        name = "decode + train transform" + (" + JPEG/rescale/blur" if robust else " (seed preset)")
        rows.append(latency_row("data cpu", name, times, note="one loader worker"))
    return rows


# ------------------------------------------------------------------------------------------ frozen CLIP


def clip_rows(paths, images, repeats: int, probe_steps: int) -> list[Row]:
    from fakeface.clip_features import ClipFeaturizer
    from fakeface.faces import FaceDetector
    from fakeface.images import load_image
    from fakeface.models import create_model
    from fakeface.pipeline import training_crop
    from fakeface.training import loss_fn, make_config, train_step

    model, _ = default_model(None)  # the shipped default's recipe (one 224 px view), else the stand-in's
    if model.family != "features":
        model = create_model("clip-vit-b16-probe")
    featurizer = ClipFeaturizer(model.recipe)
    featurizer(images[0])  # untimed: builds the session's kernels
    n_views = sum(n * n for _, n in model.recipe.views)
    rows = [latency_row("features cpu", f"CLIP featurize ({n_views} view{'s' * (n_views > 1)}, int8 ONNX)",
                        [timed(featurizer, im) for _ in range(repeats) for im in images], note="decoded image in")]

    detector = FaceDetector("auto")
    blobs = [p.read_bytes() for p in paths]
    cache_work = lambda data: featurizer(training_crop(load_image(data), detector))  # noqa: E731
    cache_work(blobs[0])
    rows.append(latency_row("features cpu", f"decode + face crop ({detector.backend}) + featurize",
                            [timed(cache_work, data) for _ in range(repeats) for data in blobs],
                            note="what the feature cache computes per image"))

    # The probe trains on cached vectors: feature vectors per second through its training steps.
    config = make_config("default")
    probe = copy.deepcopy(model).train()
    dim, batch = model.recipe.dim, config.batch_size
    feats = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, dim), dtype=np.float32))
    y = (torch.arange(batch) % 2).float()
    criterion = loss_fn(config)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def step():
        loss = criterion(probe(feats), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    rows.append(latency_row("features cpu", f"linear probe training step, batch {batch}",
                            [timed(step) for _ in range(probe_steps)], items_per_call=batch, unit="feat/s",
                            note=f"{dim}-d cached features"))
    return rows


# ------------------------------------------------------------------------------------------------- main


def estimate_rows(seed: Row | None, seed_data: Row, cached: Row, probe: Row, n_images: int) -> list[Ratio]:
    """Whole-recipe CPU estimates for n_images. Seed preset: 20 epochs over the training split, each image
    decoded and transformed every epoch in the training process (num_workers 0). Default: decode + face crop +
    features once for every image and for a JPEG copy of each training image, then up to 60 probe epochs over
    both copies. Validation passes and early stopping are left out of both."""
    from fakeface.training import PRESETS

    if not (seed and seed.rate and seed_data.p50 and cached.p50 and probe.rate):
        return []
    train = TRAIN_SHARE * n_images
    seed_s = PRESETS["seed"]["epochs"] * train * (1 / seed.rate + seed_data.p50)
    ours_s = (n_images + train) * cached.p50 + PRESETS["default"]["epochs"] * 2 * train / probe.rate
    print(f"\nwhole-recipe estimate on CPU for {n_images} images ({TRAIN_SHARE:.0%} training split): seed preset "
          f"{PRESETS['seed']['epochs']} epochs = {seed_s / 60:.1f} min; default = features for {n_images} images + "
          f"{train:.0f} JPEG copies, then {PRESETS['default']['epochs']} probe epochs = {ours_s / 60:.1f} min")
    return [Ratio(f"whole-recipe time estimate, {n_images} images (cpu)", ours_s, seed_s, False)]


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, then CUDA too when present")
    parser.add_argument("--archs", default=",".join(PIXEL_ARCHS), help="pixel architectures, comma-separated")
    parser.add_argument("--batch-size", type=int, default=24, help="pixel-model batch (the presets use 24)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per pixel model")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch threads for the whole run; when absent: torch's own (one per core)")
    parser.add_argument("--channels-last-cpu", action=argparse.BooleanOptionalAction, default=None,
                        help="also time each pixel model with channels_last on CPU (a lever row); when absent: on, "
                             "except with --quick")
    parser.add_argument("--estimate-images", type=int, default=1633, help="data size for the whole-recipe estimate")
    args = parser.parse_args(argv)
    apply_quick(args, parser, repeats=1, batch_size=4, steps=1, archs=f"efficientnet-lite0,{SEED_ARCH}")
    if args.channels_last_cpu is None:
        args.channels_last_cpu = not args.quick
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device in ("auto", "cuda"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        elif args.device == "cuda":
            parser.error("--device cuda: no CUDA device here")

    machine = machine_info()
    print_machine(machine)
    paths = sample_images(args.images, args.n_images, args.sample_seed)
    print(f"images:  {describe_sample(paths, args.images)}")
    images = decode_all(paths)
    print(f"pixel:   {archs}, random init (speed only), batch {args.batch_size}, {args.steps} timed step(s) after "
          f"one untimed, 224 px inputs from the sample (eval transform, reused round-robin)")

    from fakeface.models import architecture
    from fakeface.training import TrainConfig, use_bf16
    from fakeface.transforms import eval_transform

    rows: list[Row] = []
    key_rows: dict = {}
    ratios: list[Ratio] = []
    lever_rows: list[Row] = []
    for device in devices:
        device_rows = []
        for arch in archs:
            spec = architecture(arch).default_config()
            transform = eval_transform(spec.input_size, spec.mean, spec.std)
            tensors = [transform(im) for im in images]
            mixed = use_bf16(TrainConfig(), device, "pixels")  # what training.fit does on this device
            device_rows.append(train_step_row(arch, device, tensors, args.batch_size, args.steps, mixed))
            key_rows[(device.type, arch, mixed)] = device_rows[-1]
            if mixed:  # fp32 beside it: the seed's own precision, and the lever's other side
                device_rows.append(train_step_row(arch, device, tensors, args.batch_size, args.steps, False))
                key_rows[(device.type, arch, False)] = device_rows[-1]
            elif device.type == "cpu" and args.channels_last_cpu:  # a lever fit does not pull on this CPU
                lever_rows.append(train_step_row(arch, device, tensors, args.batch_size, args.steps, False, True))
        print_rows(device_rows, f"training steps on {device.type}"
                   + (f" ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else ""))
        rows += device_rows
        if device.type == "cpu" and lever_rows:
            print_rows(lever_rows, "lever: channels_last on CPU (fp32)")
            rows += lever_rows
        seed = key_rows.get((device.type, SEED_ARCH, False))
        for arch in archs:
            ours = key_rows.get((device.type, arch, use_bf16(TrainConfig(), device, "pixels")))
            if arch != SEED_ARCH and ours and seed:
                ratios.append(Ratio(f"{arch} training img/s ({device.type})", ours.rate, seed.rate, True))

    from fakeface.errors import FakefaceError

    data = data_rows(paths, args.repeats)
    try:
        clip = clip_rows(paths, images, args.repeats, max(args.steps, 3))
    except FakefaceError as exc:  # the ONNX backbone is not installed: the pixel rows still stand
        print(f"\nCLIP rows skipped: {exc}")
        clip = []
    print_rows(data + clip, "per-image work on CPU (the CLIP backbone runs on CPU on every machine)")
    rows += data + clip

    seed_cpu = key_rows.get(("cpu", SEED_ARCH, False))
    if clip:
        featurize, cached, probe = clip
        if seed_cpu:
            ratios.append(Ratio("CLIP featurize img/s vs seed training img/s (cpu)", featurize.rate, seed_cpu.rate,
                                True))
        ratios += estimate_rows(seed_cpu, data[0], cached, probe, args.estimate_images)
    print_ratios(ratios, "ours / seed (training)")
    machine["load_average_end"] = end_load()
    print(f"\nload average at the end: {machine['load_average_end']}")
    save_json(args.json, machine, args, rows, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
