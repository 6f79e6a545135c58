"""Train -> calibrate -> evaluate -> save (-> push), cross-validation and evaluation of a saved model.

`train_space.py` and `fakeface train` both call `train_evaluate_save`. Every image goes through the same
decode (images.load_image) and face crop (faces.face_crops) that serving uses.

Under torchrun every rank runs these functions in step (they meet at collective calls inside `featurize` and
`training.fit`); only rank 0 prints, writes the model and reports, and pushes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import datasets
import numpy as np
import torch

from . import distributed
from .clip_backbone import DEFAULT_CACHE
from .data import load_face_dataset, stratified_kfold, stratified_split
from .evaluation import choose_threshold, evaluate_predictions, fit_temperature, write_report
from .faces import FaceDetector, face_crops
from .images import load_image
from .models import FakeFaceModel, create_model, probabilities
from .training import TrainConfig, fit, predict_logits
from .transforms import degrade, eval_transform, train_transform



# ------------------------------------------------------------------------------------------------- data


def load_splits(source: str, config: TrainConfig, revision: str | None = None, limit: int | None = None):
    """(train, validation, test) Datasets: the source's own splits where it has them, else stratified ones
    (by label and difficulty) with the config's seed. Skipped unreadable files are printed by path."""
    data = load_face_dataset(source, revision)
    if distributed.world().is_main:
        for path, reason in data.skipped:
            print(f"skipped unreadable image {path}: {reason}")
    splits = {name: _raw(ds) for name, ds in data.splits.items()}
    full = splits["train"]
    if limit and limit < len(full):
        _, keep = stratified_split(full["label"], val_fraction=limit / len(full), seed=config.seed)
        full = full.select(keep)
    test = splits.get("test")
    if test is None:
        rest, test_idx = stratified_split(full["label"], config.test_fraction, config.seed, full["difficulty"])
        full, test = full.select(rest), full.select(test_idx)
    val = splits.get("validation")
    if val is None:
        train_idx, val_idx = stratified_split(full["label"], config.val_fraction, config.seed, full["difficulty"])
        full, val = full.select(train_idx), full.select(val_idx)
    return full, val, test


def _raw(ds: datasets.Dataset) -> datasets.Dataset:
    """Keep images as bytes/paths so the project's own safe loader decodes them (EXIF, modes, limits)."""
    return ds.cast_column("image", datasets.Image(decode=False))


def _image_source(item) -> bytes | str:
    img = item["image"]
    return img["bytes"] if img.get("bytes") else img["path"]


def training_crop(image, detector: FaceDetector | None):
    """The crop a training image contributes: its largest face, or the whole image when none is found."""
    return face_crops(image, detector)[0].image


def is_fake(ds: datasets.Dataset) -> np.ndarray:
    return 1.0 - np.asarray(ds["label"], dtype=np.float32)


class CroppedImages(torch.utils.data.Dataset):
    """(tensor, is_fake) pairs for the pixel family; faces are detected once, up front, not every epoch."""

    def __init__(self, ds: datasets.Dataset, transform, detector: FaceDetector | None,
                 degradation: str | None = None):
        self.ds, self.transform, self.degradation = ds, transform, degradation
        self.boxes = [face_crops(self._image(i), detector)[0].box for i in range(len(ds))]
        self.targets = is_fake(ds)

    def _image(self, i):
        image = load_image(_image_source(self.ds[i]))
        return degrade(image, self.degradation, str(i)) if self.degradation else image

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        from .faces import crop_face

        image = self._image(i)
        if self.boxes[i] is not None:
            image = crop_face(image, self.boxes[i])
        return self.transform(image), torch.tensor(self.targets[i])


def featurize(ds: datasets.Dataset, model: FakeFaceModel, detector: FaceDetector | None,
              cache_dir: str | Path | None = None, featurizer=None, degradation: str | None = None) -> np.ndarray:
    """Frozen-backbone features of every image, cached on disk by (image bytes, recipe, detector).

    Under torch.distributed the ranks share the work: each featurizes its share (every N-th image) into the
    cache, waits for the others, then reads every image from the cache. Put the cache on a disk all nodes
    share; a node that cannot see another's files computes them itself (same result, more time).
    """
    if featurizer is None:
        from .clip_features import ClipFeaturizer

        featurizer = ClipFeaturizer(model.recipe)
    key = [model.recipe.to_config(), detector.backend if detector else "none"] + ([degradation] if degradation else [])
    recipe_key = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(cache_dir or DEFAULT_CACHE) / "features" / recipe_key
    cache.mkdir(parents=True, exist_ok=True)
    w = distributed.world()
    if w.distributed:
        mine = distributed.shard(range(len(ds)), w.rank, w.world_size)
        _cached_features(ds.select(mine), model.recipe.dim, cache, featurizer, detector, degradation)
        distributed.barrier()
    return _cached_features(ds, model.recipe.dim, cache, featurizer, detector, degradation)


def _cached_features(ds: datasets.Dataset, dim: int, cache: Path, featurizer, detector,
                     degradation: str | None = None) -> np.ndarray:
    """Each image's features from the cache, computed and stored first when missing."""
    from tqdm.auto import tqdm

    out = np.zeros((len(ds), dim), np.float32)
    for i, item in enumerate(tqdm(ds, desc="features", unit="img", disable=not distributed.world().is_main)):
        source = _image_source(item)
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        digest = hashlib.sha1(data).hexdigest()
        path = cache / (digest + ".npy")
        if path.exists():
            out[i] = np.load(path, allow_pickle=False)
            continue
        image = load_image(data)
        if degradation:
            image = degrade(image, degradation, digest)
        out[i] = featurizer(training_crop(image, detector))
        # A temp name of this process's own: two ranks holding the same image (duplicates) must not collide.
        tmp = path.with_suffix(f".{os.getpid()}-{distributed.world().rank}.tmp.npy")
        np.save(tmp, out[i])
        os.replace(tmp, path)
    return out


def model_inputs(model: FakeFaceModel, config: TrainConfig, ds, train: bool, detector, cache_dir=None,
                 degradation: str | None = None):
    """A torch Dataset of (input, is_fake): cached features, or cropped and transformed images.
    `degradation` (see transforms.degrade) evaluates on re-compressed or re-sized copies."""
    if model.family == "features":
        feats, targets = featurize(ds, model, detector, cache_dir, degradation=degradation), is_fake(ds)
        if train and config.robust_augmentation:
            # one JPEG re-encoded copy of each training image (quality 60-95): uploads arrive re-compressed,
            # and about a quarter of ciplab's fakes carry JPEG tables no real photo has (a shortcut to unlearn)
            feats = np.concatenate([feats, featurize(ds, model, detector, cache_dir, degradation="jpeg:random")])
            targets = np.concatenate([targets, targets])
        return torch.utils.data.TensorDataset(torch.from_numpy(feats), torch.from_numpy(targets))
    size = model.input_size
    transform = (train_transform(size, model.mean, model.std, robust=config.robust_augmentation) if train
                 else eval_transform(size, model.mean, model.std))
    return CroppedImages(ds, transform, detector, degradation)


# ------------------------------------------------------------------------------------------------ train


def new_model(config: TrainConfig) -> FakeFaceModel:
    extra = {"features": config.features} if config.features else {}
    if config.image_size:
        extra["input_size"] = config.image_size
    return create_model(config.arch, pretrained=config.pretrained, **extra)


def train_model(config: TrainConfig, train_ds, val_ds, out_dir, detector, cache_dir=None, resume=True):
    """Fit, then calibrate on validation: temperature (NLL) and threshold (centre of the best balanced-accuracy
    plateau)."""
    torch.manual_seed(config.seed)
    model = new_model(config)
    train_set = model_inputs(model, config, train_ds, True, detector, cache_dir)
    val_set = model_inputs(model, config, val_ds, False, detector, cache_dir)
    if model.family == "features":
        model.net.set_standardisation(train_set.tensors[0])
    summary = fit(model, train_set, val_set, config, out_dir, resume=resume)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=64)
    val_logits, val_fake = predict_logits(model, val_loader)
    model.set_calibration(fit_temperature(val_logits, val_fake), model.threshold)
    if config.early_exit_band and model.family == "features" and len(model.recipe.views) > 1:
        summary["early_exit"] = train_early_exit(model, config, train_set, val_set, Path(out_dir) / "early_exit")
        val_logits, val_fake = predict_logits(model, val_loader)  # the threshold sees what serving will answer
    threshold = choose_threshold(val_fake, probabilities(val_logits, model.temperature), "balanced_accuracy_plateau")
    model.set_calibration(model.temperature, threshold)
    return model, summary


def train_early_exit(model: FakeFaceModel, config: TrainConfig, train_set, val_set, out_dir) -> dict:
    """Train the fast probe on the first view group's features (the leading slice of every feature vector),
    calibrate its temperature on validation, and attach it with the config's band."""
    fast_model = create_model(model.arch, features={**model.recipe.to_config(), "views": [model.recipe.views[0]]})
    dim = fast_model.recipe.dim
    first = lambda ds: torch.utils.data.TensorDataset(ds.tensors[0][:, :dim], ds.tensors[1])  # noqa: E731
    fast_train, fast_val = first(train_set), first(val_set)
    fast_model.net.set_standardisation(fast_train.tensors[0])
    summary = fit(fast_model, fast_train, fast_val, config, out_dir, resume=False)
    logits, fake = predict_logits(fast_model, torch.utils.data.DataLoader(fast_val, batch_size=64))
    model.attach_early_exit(fast_model.net, fit_temperature(logits, fake), config.early_exit_band)
    exits = model.exits(torch.from_numpy(logits)).numpy()
    return {**summary, "band": list(config.early_exit_band), "validation_exit_rate": float(exits.mean())}


def evaluate_split(model: FakeFaceModel, config: TrainConfig, ds, detector, cache_dir=None, threshold=None,
                   degradation: str | None = None):
    """Metrics of a model on a labelled split (per difficulty when the data has it)."""
    inputs = model_inputs(model, config, ds, False, detector, cache_dir, degradation)
    logits, fake = predict_logits(model, torch.utils.data.DataLoader(inputs, batch_size=64))
    probs = probabilities(logits, model.temperature)
    threshold = model.threshold if threshold is None else threshold
    groups = ds["difficulty"] if any(ds["difficulty"]) else None
    if groups is not None:  # reals have no difficulty: name them so the per-group table reads well
        groups = [g or "real" for g in groups]
    metrics = evaluate_predictions(fake, probs, threshold, logits=logits, temperature=model.temperature,
                                   groups=groups)
    if model.early_exit is not None:
        with torch.no_grad():
            first = inputs.tensors[0][:, : model.fast_dim].to(next(model.parameters()).device)
            exits = model.exits(model.fast_logits(first)).cpu().numpy()
        metrics["early_exit"] = {"band": model.early_exit["band"], "exit_rate": float(exits.mean()),
                                 "n": int(len(exits))}
    return metrics, fake, probs


def train_evaluate_save(source: str, output_dir: str | Path, config: TrainConfig, revision: str | None = None,
                        push_to_hub: str | None = None, limit: int | None = None, cache_dir=None) -> dict:
    """The whole recipe: data -> train -> calibrate -> evaluate on the held-out split -> save (-> push).

    Under torchrun every rank trains and evaluates (the same numbers); rank 0 alone saves and pushes, and the
    others return a summary without "model_dir".
    """
    from .model_card import write_model_card

    output_dir = Path(output_dir)
    detector = FaceDetector()
    train_ds, val_ds, test_ds = load_splits(source, config, revision, limit)
    is_main = distributed.world().is_main
    if is_main:
        print(f"data: {len(train_ds)} train, {len(val_ds)} validation, {len(test_ds)} test images")
    model, fit_summary = train_model(config, train_ds, val_ds, output_dir / "run", detector, cache_dir)
    metrics, fake, probs = evaluate_split(model, config, test_ds, detector, cache_dir)
    metrics["robustness"] = robustness(model, config, test_ds, detector, probs, cache_dir)
    if not is_main:
        return {"test": _headline(metrics), "training": fit_summary}
    metrics["training"] = {**fit_summary, "config": asdict(config), "data": source, "revision": revision,
                           "n_train": len(train_ds), "n_validation": len(val_ds), "n_test": len(test_ds)}
    model_dir = output_dir / "model"
    model.save_pretrained(model_dir)
    write_report(metrics, output_dir / "eval", is_fake=fake, fake_prob=probs, threshold=model.threshold)
    write_model_card(model_dir, model, metrics, config, source)
    log = output_dir / "run" / "train_log.jsonl"
    if log.exists():
        (model_dir / "train_log.jsonl").write_text(log.read_text())
    summary = {"model_dir": str(model_dir), "test": _headline(metrics), "training": fit_summary}
    if push_to_hub:
        from .hub import push_model_folder

        summary["pushed"] = {"repo_id": push_to_hub, "commit": push_model_folder(model_dir, push_to_hub)}
    return summary


ROBUSTNESS_CHECKS = ("jpeg:75", "jpeg:50", "resize:0.5")


def robustness(model, config, ds, detector, clean_probs, cache_dir=None, checks=ROBUSTNESS_CHECKS) -> dict:
    """The test split re-saved as JPEG q75/q50 and at half size: AUC, balanced accuracy, and how many
    verdicts flip against the clean images at the model's threshold."""
    out = {}
    clean_fake = clean_probs >= model.threshold
    for spec in checks:
        metrics, _, probs = evaluate_split(model, config, ds, detector, cache_dir, degradation=spec)
        flips = int(((probs >= model.threshold) != clean_fake).sum())
        out[spec] = {"roc_auc": metrics["ranking"]["roc_auc"],
                     "balanced_accuracy": metrics["classification"]["balanced_accuracy"],
                     "verdict_flips": flips, "n": len(probs)}
    return out


def _headline(metrics: dict) -> dict:
    c, r, cal = metrics["classification"], metrics["ranking"], metrics["calibration"]
    return {"roc_auc": r["roc_auc"], "balanced_accuracy": c["balanced_accuracy"], "accuracy": c["accuracy"],
            "ece": cal["ece"], "threshold": metrics["threshold"]}


# --------------------------------------------------------------------------------------- cross-validation


def cross_validate(source: str, config: TrainConfig, folds: int = 5, output_dir=None, revision=None,
                   limit=None, cache_dir=None) -> dict:
    """Stratified k-fold: each fold trains on k-1 parts (with its own validation split for early stopping and
    calibration) and is scored on the held-out part. Reports each fold and mean +- std."""
    detector = FaceDetector()
    data = load_face_dataset(source, revision)
    full = _raw(data.train)
    if limit and limit < len(full):
        _, keep = stratified_split(full["label"], val_fraction=limit / len(full), seed=config.seed)
        full = full.select(keep)
    results = []
    for k, (train_idx, test_idx) in enumerate(stratified_kfold(full["label"], folds, config.seed, full["difficulty"])):
        part = full.select(train_idx)
        tr, va = stratified_split(part["label"], config.val_fraction, config.seed, part["difficulty"])
        fold_dir = Path(output_dir or "crossval") / f"fold{k}"
        model, _ = train_model(config, part.select(tr), part.select(va), fold_dir, detector, cache_dir, resume=False)
        metrics, _, _ = evaluate_split(model, config, full.select(test_idx), detector, cache_dir)
        results.append({**_headline(metrics), "groups": {g: m["ranking"]["roc_auc"]
                                                          for g, m in metrics.get("groups", {}).items()}})
        if distributed.world().is_main:
            print(f"fold {k}: {json.dumps(results[-1])}")
    summary = {"folds": results, "config": asdict(config)}
    for key in ("roc_auc", "balanced_accuracy", "accuracy", "ece"):
        values = np.array([r[key] for r in results], dtype=float)
        summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    if output_dir and distributed.world().is_main:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "crossval.json").write_text(json.dumps(summary, indent=2))
    return summary


# --------------------------------------------------------------------------------------------- evaluate


def evaluate_model(source: str, model_spec: str | None, output_dir, revision=None, limit=None, threshold=None):
    """Score a saved model on every image of a labelled set (its test split when it has one)."""
    from .predictor import Predictor

    predictor = Predictor.load(model_spec)
    data = load_face_dataset(source, revision)
    ds = _raw(data.splits["test"] if "test" in data.splits else data.train)
    if limit and limit < len(ds):
        _, keep = stratified_split(ds["label"], val_fraction=limit / len(ds), seed=0)
        ds = ds.select(keep)
    probs = np.array([predictor.predict_file(_image_source(item)).fake_prob for item in ds])
    fake = is_fake(ds)
    t = predictor.threshold if threshold is None else threshold
    groups = [g or "real" for g in ds["difficulty"]] if any(ds["difficulty"]) else None
    metrics = evaluate_predictions(fake, probs, t, groups=groups)
    metrics["model"] = predictor.source.describe() if predictor.source else None
    write_report(metrics, output_dir, is_fake=fake, fake_prob=probs, threshold=t)
    return _headline(metrics)
