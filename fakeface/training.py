"""The training loop: read it top to bottom. Loss, optimiser, schedule, early stopping, checkpoints, log.

One code path for CPU and CUDA: image models run their forward under bf16 autocast with channels_last tensors
on CUDA, and on CPUs with bf16 matrix units (Intel AMX), where a ResNet50 training step runs ~3x faster than
in fp32 (benchmarks/bench_training.py).
Targets are is_fake (1 - dataset label), matching the model's single "fake" logit.

One code path for one process and many: under torchrun (see distributed.py) the model is wrapped in
DistributedDataParallel, each rank trains on its share of every batch (`batch_size` is the global batch), losses
and validation predictions are gathered from all ranks, and only rank 0 writes the log and checkpoints.

Files in `out_dir`: `train_log.jsonl` (one line per epoch), `checkpoint.pt` (the last epoch's weights, optimiser,
schedule, counters and config) and `best.safetensors` (the best epoch's weights, the ones `fit` leaves in the
model). A run resumes only when asked (`resume=True`), and only with the config it was saved with, up to the fields
in RESUMABLE_CHANGES; a fresh run deletes what an earlier one left.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.ops import sigmoid_focal_loss
from tqdm.auto import tqdm

from . import distributed
from .errors import FakefaceError

CHECKPOINT, BEST_WEIGHTS, TRAIN_LOG = "checkpoint.pt", "best.safetensors", "train_log.jsonl"


@dataclass
class TrainConfig:
    """Every setting of a training run. Each field is also a `fakeface train` / `crossval` flag, generated from
    this class (fakeface/cli.py, `_add_config_options`): a new field needs a type annotation, nothing more."""

    arch: str = "clip-vit-b16-probe"
    epochs: int = 20
    batch_size: int = 24
    lr: float = 2e-4
    weight_decay: float = 1e-5
    loss: str = "focal"  # "focal" (alpha 0.25, gamma 2) or "bce"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    scheduler: str = "plateau"  # "plateau" or "cosine"
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    early_stopping_patience: int = 6
    image_size: int | None = None  # None: the architecture's own
    pretrained: bool = True
    robust_augmentation: bool = True
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    num_workers: int = 0
    max_steps_per_epoch: int | None = None  # for smoke tests
    features: dict = field(default_factory=dict)  # frozen-backbone feature recipe (see clip_features.py)
    # frozen-feature models: also train a 1-view probe that answers alone outside this P(fake) band
    early_exit_band: list[float] | None = None
    # ...reading the first view group's first N recipe layers (None: all), so the tower can stop at that block
    early_exit_layers: int | None = None
    precision: str = "auto"  # "auto" (bf16 where the hardware has it, see use_bf16), "bf16" or "fp32"
    # frozen-feature models: cached variants of every training image (transforms.degrade specs, e.g. "aug:1");
    # None keeps the ciplab recipe's one JPEG re-encoded copy ("jpeg:random") when robust_augmentation is on
    feature_variants: list[str] | None = None
    # frozen-feature models: pseudo-fakes made from every training real ("sbi:1": one self-blended copy)
    pseudo_fakes: list[str] = field(default_factory=list)
    # draw training items so that every (source, class) cell weighs the same, times its source's weight
    balanced_sampling: bool = False
    # how validation data picks the decision threshold (evaluation.choose_threshold criteria)
    threshold_rule: str = "balanced_accuracy_plateau"
    # frozen-feature models with fakes of several kinds: also fit the "most like" head (composite / face swap /
    # GAN / diffusion, data.source_family of each training fake's source)
    kind_head: bool = False


PRESETS: dict[str, dict] = {
    # The seed project's recipe, as published: ResNet50 + attention, focal loss, its optimiser settings.
    "seed": dict(arch="resnet50-attention", epochs=20, batch_size=24, lr=2e-4, weight_decay=1e-5, loss="focal",
                 scheduler="plateau", plateau_factor=0.5, plateau_patience=3, robust_augmentation=False),
    "lite0": dict(arch="efficientnet-lite0", epochs=12, batch_size=24, lr=3e-4, weight_decay=1e-4, loss="bce",
                  scheduler="cosine"),
    # The shipped default: frozen CLIP features + a linear probe (see fakeface/default_model/README.md).
    # Head settings from 5-fold CV on ciplab (lr 1e-3/3e-4/1e-4, weight decay 0.01-2): all within 0.003 AUC.
    "ciplab": dict(arch="clip-vit-b16-probe", epochs=100, batch_size=64, lr=1e-4, weight_decay=0.05, loss="bce",
                   scheduler="cosine", early_stopping_patience=15, early_exit_band=[0.05, 0.7]),
    # Every kind of fake (composites, GAN, diffusion, face swaps): one 224 px view of the face crop and its
    # mirror image averaged (test-time mirroring: a mirrored upload gets the same answer), every block's class
    # token and patch mean (more of the fakes at a low false-positive rate than blocks 5/7/9/11), every source
    # and class drawn equally often, a common-range augmented copy of each image (self-blended pseudo-fakes
    # lost, see --pseudo-fakes). Recipe choice: scripts/experiments/README.md (multi-source and issue 24).
    "multisource": dict(arch="clip-vit-b16-probe", epochs=100, batch_size=64, lr=1e-4, weight_decay=0.05,
                        loss="bce", scheduler="cosine", early_stopping_patience=15, early_exit_band=[],
                        features={"views": [[224, 1]], "layers": list(range(12)), "tokens": ["cls", "patch_mean"],
                                  "mirror": True},
                        feature_variants=["aug:1"], balanced_sampling=True, threshold_rule="real_fpr:0.05", kind_head=True),
}
PRESETS["default"] = PRESETS["multisource"]


def make_config(preset: str | None = None, **overrides) -> TrainConfig:
    if preset and preset not in PRESETS:
        raise FakefaceError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    values = {**PRESETS.get(preset or "", {}), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**values)


def loss_fn(config: TrainConfig):
    if config.loss == "focal":
        return lambda logits, target: sigmoid_focal_loss(
            logits, target, alpha=config.focal_alpha, gamma=config.focal_gamma, reduction="mean")
    if config.loss == "bce":
        return nn.BCEWithLogitsLoss()
    raise FakefaceError(f"Unknown loss {config.loss!r}: use 'focal' or 'bce'.")


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_bf16_matrix_units() -> bool:
    """Intel AMX-BF16 (Sapphire Rapids and later): bf16 convolutions and matmuls at several times fp32 speed."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return False


def use_bf16(config: TrainConfig, device: torch.device, family: str) -> bool:
    """bf16 autocast + channels_last for image models on CUDA or an AMX CPU; frozen-feature probes stay fp32
    (they are tiny, and their shipped figures were measured in fp32)."""
    if config.precision not in ("auto", "bf16", "fp32"):
        raise FakefaceError(f"Unknown precision {config.precision!r}: use 'auto', 'bf16' or 'fp32'.")
    if config.precision != "auto":
        return config.precision == "bf16"
    return family == "pixels" and (device.type == "cuda" or cpu_has_bf16_matrix_units())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _tmp(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".tmp")


def _atomic_save(obj, path: Path) -> None:
    """Write to a temp file, then rename: a kill mid-write never leaves a half checkpoint behind."""
    torch.save(obj, _tmp(path))
    os.replace(_tmp(path), path)


# Config fields a resumed run may change, because they do not change what training computes from the checkpoint
# on: `num_workers` (how many processes load the data; random augmentations then come from other worker seeds,
# the recipe is the same) and `early_exit_band` / `early_exit_layers` (read after fit, by
# pipeline.train_early_exit, which always trains afresh). `epochs` may change too with the plateau scheduler, to
# continue a run further (or stop it sooner); with cosine it shapes the learning-rate schedule, so it must match.
# Every other field must be equal.
RESUMABLE_CHANGES = ("num_workers", "early_exit_band", "early_exit_layers")


def config_differences(saved: dict, config: TrainConfig) -> dict[str, tuple]:
    """{field: (checkpoint's value, current value)} for the fields that forbid resuming a run saved with `saved`."""
    current = asdict(config)
    free = set(RESUMABLE_CHANGES) | ({"epochs"} if saved.get("scheduler") == config.scheduler == "plateau" else set())
    absent = "<absent>"  # a field the checkpoint's version of TrainConfig did not have
    return {k: (saved.get(k, absent), current.get(k, absent)) for k in sorted(current.keys() | saved.keys())
            if k not in free and saved.get(k, absent) != current.get(k, absent)}


def check_resumable(saved: dict, config: TrainConfig, path: Path | str) -> None:
    """Raise FakefaceError, naming the differing fields, unless a run saved with config `saved` may resume as
    `config` (see RESUMABLE_CHANGES)."""
    diffs = config_differences(saved, config)
    if diffs:
        listed = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in diffs.items())
        raise FakefaceError(f"Cannot resume {path}: it was saved with another config ({listed}); resume with the "
                            f"same settings, or start afresh (`fakeface train --overwrite`, or another output folder).")


def read_checkpoint(path: Path | str) -> dict:
    """A checkpoint `fit` wrote (tensors and plain values only: weights_only never runs pickled code)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise FakefaceError(f"{path} is not a readable fakeface checkpoint ({exc}).") from None
    if not isinstance(ckpt, dict) or not {"model", "state", "config"} <= ckpt.keys():
        raise FakefaceError(f"{path} is not a fakeface checkpoint (no model, state and config in it).")
    return ckpt


def _save_best(weights: dict, epoch: int, path: Path) -> None:
    """Write the best weights to `path`.tmp; `_commit_best` renames it once the checkpoint naming that epoch is
    written. A kill in between leaves the finished .tmp, which `_load_best` picks up."""
    save_file(weights, _tmp(path), metadata={"epoch": str(epoch)})


def _commit_best(path: Path) -> None:
    os.replace(_tmp(path), path)


def _load_best(path: Path, epoch: int) -> dict:
    """The best weights of (0-based) `epoch`, from `path`, or from the .tmp a kill left before its rename."""
    for candidate in (path, _tmp(path)):
        try:
            with safe_open(candidate, framework="pt") as f:
                saved_epoch = (f.metadata() or {}).get("epoch")
        except (OSError, SafetensorError):  # absent, or a .tmp killed mid-write (the checkpoint is older then)
            continue
        if saved_epoch == str(epoch):
            if candidate != path:
                os.replace(candidate, path)
            return load_file(path)
    raise FakefaceError(f"Cannot resume: {path} does not hold the best weights (epoch {epoch + 1}) that the "
                        f"checkpoint beside it names; start afresh (`fakeface train --overwrite`).")


def _truncate_log(path: Path, epochs: int) -> None:
    """Keep the log's first `epochs` lines: a kill after an epoch's line but before its checkpoint redoes it."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        if len(lines) > epochs:
            path.write_text("".join(lines[:epochs]))


def _weights_copy(model: nn.Module) -> dict:
    """A CPU copy of the weights that safetensors can write (contiguous, no shared storage)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}



def _make_optimizer(model, config: TrainConfig, steps_per_epoch: int):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    if config.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience)
    elif config.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs))
    else:
        raise FakefaceError(f"Unknown scheduler {config.scheduler!r}: use 'plateau' or 'cosine'.")
    return optimizer, scheduler


def _batch_to(batch, device, channels_last: bool):
    x, y = batch
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, dtype=torch.float32)


def _load_checkpoint(out_dir: Path, config: TrainConfig, resume: bool):
    """The checkpoint in `out_dir` with its best weights under "best" (None: start afresh). Rank 0 reads both and
    hands them to every rank, so the other nodes need not share its disk; every rank raises the same refusal."""
    ckpt = None
    if resume and distributed.world().is_main and (out_dir / CHECKPOINT).exists():
        try:
            ckpt = read_checkpoint(out_dir / CHECKPOINT)
            check_resumable(ckpt["config"], config, out_dir / CHECKPOINT)
            # checkpoints written before best.safetensors carried a copy of the best weights in their state
            ckpt["best"] = ckpt["state"].pop("best_model", None)
            if ckpt["best"] is None and ckpt["state"]["best_epoch"] >= 0:
                ckpt["best"] = _load_best(out_dir / BEST_WEIGHTS, ckpt["state"]["best_epoch"])
        except FakefaceError as exc:
            ckpt = {"error": str(exc)}
    ckpt = distributed.broadcast_object(ckpt)
    if ckpt is not None and "error" in ckpt:
        raise FakefaceError(ckpt["error"])
    return ckpt


def _rank_share_loader(dataset, batch_size: int, num_workers: int):
    """A loader over this rank's share of an evaluation set; `_gathered_logits` reassembles the whole."""
    w = distributed.world()
    if w.distributed:
        dataset = torch.utils.data.Subset(dataset, distributed.shard(range(len(dataset)), w.rank, w.world_size))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def _gathered_logits(model, loader, device, mixed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets of the whole set, in order and identical on every rank (each scored its share)."""
    if len(loader.dataset):
        logits, fake = predict_logits(model, loader, device, mixed)
    else:  # fewer images than ranks
        logits, fake = np.zeros(0, np.float32), np.zeros(0, np.float32)
    return distributed.gather_shards(logits), distributed.gather_shards(fake)


def train_step(model, x, y, criterion, optimizer, mixed: bool) -> torch.Tensor:
    """One optimiser step; `mixed` runs the forward under bf16 autocast. Returns the loss."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=mixed):
        logits = model(x)
    loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


@torch.no_grad()
def predict_logits(model, loader, device=None, mixed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits and is_fake targets for a whole loader (eval mode). fp32 unless `mixed` (bf16 autocast, as
    fit's validation passes use): calibration and test figures come out in the numerics serving runs in."""
    device = device or next(model.parameters()).device
    model.eval()
    logits, targets = [], []
    for batch in loader:
        x, y = _batch_to(batch, device, mixed)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed):
            out = model(x)
        logits.append(out.float().cpu())
        targets.append(y.cpu())
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


def fit(model: nn.Module, train_set, val_set, config: TrainConfig, out_dir: str | Path,
        resume: bool = False, sampler_factory=None) -> dict:
    """Train `model` in place; keep the best weights (lowest validation loss). Returns a summary dict.

    `train_set`/`val_set` yield (input, is_fake). Each epoch reseeds every RNG from (seed, epoch), so a run
    resumed from its last end-of-epoch checkpoint repeats exactly what an uninterrupted run would have done.
    `resume=True` continues the checkpoint in `out_dir` (if there is one) and raises FakefaceError when it was
    saved with another config (see RESUMABLE_CHANGES); otherwise training starts afresh and replaces whatever
    an earlier run left in `out_dir` (checkpoint, best weights, log).
    `sampler_factory(dataset, epoch)` picks each epoch's training items for this rank (default:
    `distributed.epoch_sampler`, which makes N processes train exactly like one). Rank 0 alone prints and
    writes files.
    """
    from .evaluation import ranking_metrics
    from .models import probabilities

    w = distributed.world()
    is_main = w.is_main
    if config.batch_size % w.world_size:
        raise FakefaceError(f"batch size {config.batch_size} is the global batch: it must be divisible by the "
                            f"{w.world_size} processes.")
    rank_batch = config.batch_size // w.world_size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, best_path, log_path = out_dir / CHECKPOINT, out_dir / BEST_WEIGHTS, out_dir / TRAIN_LOG
    device = pick_device()
    cuda = device.type == "cuda"
    mixed = use_bf16(config, device, getattr(model, "family", "pixels"))
    model.to(device)
    if mixed:
        model.to(memory_format=torch.channels_last)
    trained = distributed.wrap(model, device)  # DDP when distributed: its backward averages gradients
    model = distributed.unwrap(trained)  # evaluation and checkpoints use the plain module
    criterion = loss_fn(config)
    val_loader = _rank_share_loader(val_set, max(config.batch_size, 64), config.num_workers)
    sampler_factory = sampler_factory or distributed.epoch_sampler(config.seed * 1000)
    steps = math.ceil(len(train_set) / config.batch_size)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    optimizer, scheduler = _make_optimizer(model, config, steps)

    state = {"epoch": 0, "best_loss": float("inf"), "best_epoch": -1, "bad_epochs": 0}
    best = None  # the best epoch's weights (CPU), also in best.safetensors; the checkpoint holds no copy
    ckpt = _load_checkpoint(out_dir, config, resume)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state, best = ckpt["state"], ckpt["best"]
        if is_main:
            print(f"Resuming from {ckpt_path} after epoch {state['epoch']}")
            _truncate_log(log_path, state["epoch"])
    elif is_main:  # a fresh run: nothing of an earlier one may be resumed or reported later
        for stale in (ckpt_path, best_path, _tmp(best_path), log_path):
            stale.unlink(missing_ok=True)

    start = time.perf_counter()
    images_seen = 0
    for epoch in range(state["epoch"], config.epochs):
        # Offset by rank so ranks draw different augmentations and dropout masks for their different images.
        seed = config.seed * 1000 + epoch + 7919 * w.rank
        seed_everything(seed)
        generator = torch.Generator().manual_seed(seed)
        sampler = sampler_factory(train_set, epoch)
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=rank_batch, shuffle=sampler is None, sampler=sampler,
            generator=generator, num_workers=config.num_workers, drop_last=len(train_set) > config.batch_size,
            persistent_workers=False, pin_memory=cuda)
        trained.train()
        total, count, epoch_start = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not is_main)
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            x, y = _batch_to(batch, device, mixed)
            loss = train_step(trained, x, y, criterion, optimizer, mixed=mixed)
            total += loss.item() * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / count:.4f}")
        total, count = distributed.sum_across([total, count], device)  # the epoch's loss over all ranks
        images_seen += count
        train_seconds = time.perf_counter() - epoch_start

        val_logits, val_fake = _gathered_logits(model, val_loader, device, mixed)
        val_loss = float(criterion(torch.from_numpy(val_logits), torch.from_numpy(val_fake)))
        ranking = ranking_metrics(val_fake, probabilities(val_logits))
        if config.scheduler == "plateau":
            scheduler.step(val_loss)
        else:
            scheduler.step()

        improved = val_loss < state["best_loss"] - 1e-6
        if improved:
            state.update(best_loss=val_loss, best_epoch=epoch, bad_epochs=0)
            best = _weights_copy(model)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        record = {"epoch": epoch + 1, "train_loss": total / max(count, 1), "val_loss": val_loss,
                  "val_auc": ranking["roc_auc"], "lr": optimizer.param_groups[0]["lr"],
                  "images_per_s": count / max(train_seconds, 1e-9), "seconds": train_seconds}
        if is_main:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if improved:
                _save_best(best, epoch, best_path)
            _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "state": state, "config": asdict(config)},
                         ckpt_path)
            if improved:
                _commit_best(best_path)
        if state["bad_epochs"] >= config.early_stopping_patience:
            break

    if best is not None:  # what best.safetensors holds (every rank has it, so none need rank 0's disk)
        model.load_state_dict(best)
    model.eval()
    elapsed = time.perf_counter() - start
    return {"best_epoch": state["best_epoch"] + 1, "best_val_loss": state["best_loss"], "epochs_run": state["epoch"],
            "images_per_s": images_seen / elapsed if images_seen else None, "processes": w.world_size,
            "precision": "bf16" if mixed else "fp32"}

