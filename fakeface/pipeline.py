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
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import datasets
import numpy as np
import torch

from . import distributed
from .clip_backbone import DEFAULT_CACHE
from .data import load_face_dataset, load_face_sources, split_strata, stratified_kfold, stratified_split
from .evaluation import (choose_threshold, evaluate_predictions, fit_temperature, per_source_report,
                         write_report)
from . import faces
from .faces import FaceDetector, face_crops
from .images import load_image
from .models import FakeFaceModel, create_model, probabilities
from .training import TrainConfig, fit, predict_logits
from .transforms import degrade, eval_transform, train_transform



# ------------------------------------------------------------------------------------------------- data


def load_splits(source, config: TrainConfig, revision: str | None = None, limit: int | None = None):
    """(train, validation, test) Datasets: the sources' own splits where they have them, else stratified ones
    (by label, source and difficulty; face-swap pairs kept together) with the config's seed. `source` is one
    spec or a list (see data.load_face_sources). Skipped unreadable files are printed by path."""
    data = load_face_sources(source, revision)
    if distributed.world().is_main:
        for path, reason in data.skipped:
            print(f"skipped unreadable image {path}: {reason}")
    splits = {name: _raw(ds) for name, ds in data.splits.items()}
    full = _limited(splits["train"], limit, config.seed)
    test = splits.get("test")
    if test is None:
        rest, test_idx = _split(full, config.test_fraction, config.seed)
        full, test = full.select(rest), full.select(test_idx)
    val = splits.get("validation")
    if val is None:
        train_idx, val_idx = _split(full, config.val_fraction, config.seed)
        full, val = full.select(train_idx), full.select(val_idx)
    return full, val, test, data.weights


def _split(ds: datasets.Dataset, fraction: float, seed: int):
    return stratified_split(ds["label"], fraction, seed, split_strata(ds), ds["group"])


def _limited(ds: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """A stratified subset of `limit` images (for quick runs), or the whole set."""
    if limit and limit < len(ds):
        _, keep = _split(ds, limit / len(ds), seed)
        ds = ds.select(keep)
    return ds


def _raw(ds: datasets.Dataset) -> datasets.Dataset:
    """Keep images as bytes/paths so the project's own safe loader decodes them (EXIF, modes, limits)."""
    return ds.cast_column("image", datasets.Image(decode=False))


def _image_source(item) -> bytes | str:
    img = item["image"]
    return img["bytes"] if img.get("bytes") else img["path"]


# Serving scores every face crop (faces.face_crops) and an image follows its most-fake face; evaluation does the
# same. Training learns from each image's largest face: the label belongs to its subject, and the other faces
# of a composite may be untouched.
FACES_TRAINED, FACES_SCORED = "largest", "all"


def training_crop(image, detector: FaceDetector | None):
    """The crop a training image contributes: its largest face, or the whole image when none is found."""
    return face_crops(image, detector)[0].image


def is_fake(ds: datasets.Dataset) -> np.ndarray:
    return 1.0 - np.asarray(ds["label"], dtype=np.float32)


def image_max(values: np.ndarray, image_index: np.ndarray, n_images: int) -> np.ndarray:
    """Per image, the largest of its faces' values (logits or probabilities): the serving rule."""
    out = np.full(n_images, -np.inf, dtype=np.float32)
    np.maximum.at(out, np.asarray(image_index), np.asarray(values, dtype=np.float32))
    return out


class CroppedImages(torch.utils.data.Dataset):
    """(tensor, is_fake) rows for the pixel family, one per face crop (`which`: FACES_TRAINED or FACES_SCORED);
    faces are detected once, up front, not every epoch. `image_index[row]` is the row's image."""

    def __init__(self, ds: datasets.Dataset, transform, detector: FaceDetector | None,
                 degradation: str | None = None, which: str = FACES_TRAINED):
        self.ds, self.transform, self.degradation = ds, transform, degradation
        self.rows = []  # (image, face box or None for the whole image)
        for i in range(len(ds)):
            crops = face_crops(self._image(i), detector)
            self.rows += [(i, crop.box) for crop in (crops[:1] if which == FACES_TRAINED else crops)]
        self.image_index = np.array([i for i, _ in self.rows])
        self.targets = is_fake(ds)[self.image_index]
        self.sources = [ds["source"][i] for i in self.image_index]  # for balanced sampling

    def _image(self, i):
        image = load_image(_image_source(self.ds[i]))
        return degrade(image, self.degradation, str(i)) if self.degradation else image

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, row):
        from .faces import crop_face

        i, box = self.rows[row]
        image = self._image(i)
        if box is not None:
            image = crop_face(image, box)
        return self.transform(image), torch.tensor(self.targets[row])


def feature_fingerprint(featurizer, detector: FaceDetector | None, variant: str | None) -> str:
    """A key for everything that shapes a cached feature summary: the backbone file's sha256, the views, the
    face-crop constants and detector settings, and the variant (augmentation / degradation / pseudo-fake).
    Changing any of them starts a fresh cache instead of silently training on old crops."""
    parts = {"featurizer": featurizer.fingerprint(), "crop": faces.crop_settings(detector), "variant": variant or "",
             "format": FEATURE_CACHE_FORMAT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# 3: one entry per image holds every face's summary, (faces, groups, 12, 2, 768), largest face first
FEATURE_CACHE_FORMAT = 3  # bump when the cached array's layout or the code that makes it changes


def featurize(ds: datasets.Dataset, model: FakeFaceModel, detector: FaceDetector | None,
              cache_dir: str | Path | None = None, featurizer=None, degradation: str | None = None,
              which: str = FACES_TRAINED):
    """Frozen-backbone features (this model's recipe) of every image's face crops (`faces.face_crops`), from an
    on-disk cache of all-layer summaries keyed by image bytes and `feature_fingerprint`.

    which=FACES_TRAINED: one row per image, its largest face (an (images, dim) array).
    which=FACES_SCORED: one row per face; returns (features (faces, dim), image_index (faces,)).

    `degradation` names a variant of each image (transforms.degrade specs such as "jpeg:75" or "aug:1", or
    "sbi:1" for a self-blended pseudo-fake); variants are seeded by the image's hash, so they are cacheable.

    Under torch.distributed the ranks share the work: each featurizes its share (every N-th image) into the
    cache, waits for the others, then reads every image from the cache. Put the cache on a disk all nodes
    share; a node that cannot see another's files computes them itself (same result, more time).
    """
    if featurizer is None:
        from .clip_features import ClipFeaturizer

        featurizer = ClipFeaturizer(model.recipe)
    cache = Path(cache_dir or DEFAULT_CACHE) / "features" / feature_fingerprint(featurizer, detector, degradation)
    cache.mkdir(parents=True, exist_ok=True)
    w = distributed.world()
    if w.distributed:
        mine = distributed.shard(range(len(ds)), w.rank, w.world_size)
        _cached_summaries(ds.select(mine), cache, featurizer, detector, degradation)
        distributed.barrier()
    summaries = _cached_summaries(ds, cache, featurizer, detector, degradation)
    if which == FACES_TRAINED:
        return np.stack([model.recipe.select(s[0]) for s in summaries]) if summaries else \
            np.zeros((0, model.recipe.dim), np.float32)
    index = np.array([i for i, s in enumerate(summaries) for _ in range(len(s))], dtype=np.int64)
    rows = [model.recipe.select(face) for s in summaries for face in s]
    return (np.stack(rows) if rows else np.zeros((0, model.recipe.dim), np.float32)), index


def _cached_summaries(ds: datasets.Dataset, cache: Path, featurizer, detector,
                      degradation: str | None = None) -> list[np.ndarray]:
    """Each image's (faces, groups, 12, 2, 768) summary, computed and stored when missing."""
    from tqdm.auto import tqdm

    out = []
    for item in tqdm(ds, desc="features", unit="img", disable=not distributed.world().is_main):
        source = _image_source(item)
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        digest = hashlib.sha1(data).hexdigest()
        path = cache / (digest + ".npy")
        if path.exists():
            out.append(np.load(path, allow_pickle=False))
            continue
        image = image_variant(load_image(data), degradation, digest, detector)
        summary = np.stack([featurizer.summary(crop.image) for crop in face_crops(image, detector)])
        out.append(summary)
        # A temp name of this process's own: two ranks holding the same image (duplicates) must not collide.
        tmp = path.with_suffix(f".{os.getpid()}-{distributed.world().rank}.tmp.npy")
        np.save(tmp, summary)
        os.replace(tmp, path)
    return out


def image_variant(image, spec: str | None, key: str, detector: FaceDetector | None):
    """The image itself (spec None), a degraded / augmented copy (transforms.degrade), or a self-blended
    pseudo-fake ("sbi:N", blended through the largest face found)."""
    if not spec:
        return image
    if spec.startswith("sbi"):
        from .self_blend import self_blend

        boxes = detector.detect(image) if detector is not None else []
        return self_blend(image, boxes[0] if boxes else None, key + spec)
    return degrade(image, spec, key)


class FeatureSet(torch.utils.data.TensorDataset):
    """(features, is_fake) rows, with each row's source (pseudo-fakes: "self-blend") for balanced sampling
    and per-source reports, and each row's image (`image_index`; rows are faces when every face is scored)."""

    def __init__(self, feats: np.ndarray, targets: np.ndarray, sources: list[str],
                 image_index: np.ndarray | None = None):
        super().__init__(torch.from_numpy(np.ascontiguousarray(feats)), torch.from_numpy(targets))
        self.sources, self.targets = list(sources), targets
        self.image_index = np.arange(len(targets)) if image_index is None else np.asarray(image_index)


PSEUDO_FAKE_SOURCE = "self-blend"


def training_variants(config: TrainConfig) -> list[str]:
    """The cached copies each training image adds (see TrainConfig.feature_variants)."""
    if config.feature_variants is not None:
        return list(config.feature_variants)
    # the ciplab recipe: one JPEG re-encoded copy of each training image (quality 60-95): uploads arrive
    # re-compressed, and about a quarter of ciplab's fakes carry JPEG tables no real photo has
    return ["jpeg:random"] if config.robust_augmentation else []


def model_inputs(model: FakeFaceModel, config: TrainConfig, ds, train: bool, detector, cache_dir=None,
                 degradation: str | None = None):
    """A torch Dataset of (input, is_fake) rows: cached features (a FeatureSet), or cropped and transformed
    images. Training rows are each image's largest face, plus the config's variants of every image and its
    pseudo-fakes of every real; evaluation rows are every face (`image_index` says whose), scored as serving
    scores them. `degradation` (see transforms.degrade) evaluates on re-compressed or re-sized copies."""
    if model.family == "features":
        if not train:
            feats, index = featurize(ds, model, detector, cache_dir, degradation=degradation, which=FACES_SCORED)
            return FeatureSet(feats, is_fake(ds)[index], [ds["source"][i] for i in index], index)
        feats = [featurize(ds, model, detector, cache_dir, degradation=degradation)]
        targets, sources = [is_fake(ds)], [list(ds["source"])]
        for variant in training_variants(config):
            feats.append(featurize(ds, model, detector, cache_dir, degradation=variant))
            targets.append(targets[0])
            sources.append(sources[0])
        reals = ds.select([i for i, label in enumerate(ds["label"]) if label == 1])
        for variant in config.pseudo_fakes:
            feats.append(featurize(reals, model, detector, cache_dir, degradation=variant))
            targets.append(np.ones(len(reals), np.float32))
            sources.append([PSEUDO_FAKE_SOURCE] * len(reals))
        return FeatureSet(np.concatenate(feats), np.concatenate(targets), sum(sources, []))
    size = model.input_size
    transform = (train_transform(size, model.mean, model.std, robust=config.robust_augmentation) if train
                 else eval_transform(size, model.mean, model.std))
    return CroppedImages(ds, transform, detector, degradation, FACES_TRAINED if train else FACES_SCORED)


def image_logits(model: FakeFaceModel, inputs, n_images: int) -> np.ndarray:
    """Raw logits per image from per-face rows: each image's most-fake face, as serving answers."""
    logits, _ = predict_logits(model, torch.utils.data.DataLoader(inputs, batch_size=64))
    return image_max(logits, inputs.image_index, n_images)


def balanced_sampler(cells: list[str], weights: dict[str, float], seed: int):
    """`sampler_factory` for training.fit: each epoch draws len(data) items with replacement so that every
    (source, class) cell carries the same total weight, times its source's weight (default 1). Seeded by
    (seed, epoch) and cut by rank, like distributed.epoch_sampler."""
    counts = Counter(cells)
    source_of = {cell: cell.split("|")[0] for cell in counts}
    item_weight = torch.tensor([weights.get(source_of[c], 1.0) / counts[c] for c in cells], dtype=torch.float64)

    def factory(dataset, epoch: int):
        w = distributed.world()
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.multinomial(item_weight, len(cells), replacement=True, generator=generator)
        n = len(order) - len(order) % w.world_size
        return order[w.rank:n:w.world_size].tolist()

    return factory


def _sampler_for(config: TrainConfig, train_set, weights: dict[str, float] | None):
    if not config.balanced_sampling:
        return None
    cells = [f"{s}|{int(t)}" for s, t in zip(train_set.sources, np.asarray(train_set.targets).tolist())]
    return balanced_sampler(cells, weights or {}, config.seed)


# ------------------------------------------------------------------------------------------------ train


def new_model(config: TrainConfig) -> FakeFaceModel:
    extra = {"features": config.features} if config.features else {}
    if config.image_size:
        extra["input_size"] = config.image_size
    return create_model(config.arch, pretrained=config.pretrained, **extra)


def train_model(config: TrainConfig, train_ds, val_ds, out_dir, detector, cache_dir=None, resume=False,
                weights: dict[str, float] | None = None):
    """Fit, then calibrate on validation (all sources together): temperature (NLL) and threshold (the config's
    `threshold_rule`, on the probabilities serving gives). `weights`: per-source sampling weights."""
    torch.manual_seed(config.seed)
    model = new_model(config)
    train_set = model_inputs(model, config, train_ds, True, detector, cache_dir)
    val_set = model_inputs(model, config, val_ds, False, detector, cache_dir)
    if model.family == "features":
        from .clip_backbone import file_sha256, locate_clip_onnx

        model.net.set_standardisation(train_set.tensors[0])
        model.pin_backbone(file_sha256(locate_clip_onnx()))
    model.record_crop(faces.crop_settings(detector))
    sampler = _sampler_for(config, train_set, weights)
    summary = fit(model, train_set, val_set, config, out_dir, resume=resume, sampler_factory=sampler)
    # calibration sees what serving will answer: one logit per image, its most-fake face
    val_fake = is_fake(val_ds)
    model.set_calibration(fit_temperature(image_logits(model, val_set, len(val_ds)), val_fake), model.threshold)
    if config.early_exit_band and model.family == "features" and (
            len(model.recipe.views) > 1 or 0 < (config.early_exit_layers or 0) < len(model.recipe.layers)):
        summary["early_exit"] = train_early_exit(model, config, train_set, val_set, Path(out_dir) / "early_exit",
                                                 sampler)
    val_logits = image_logits(model, val_set, len(val_ds))
    threshold = choose_threshold(val_fake, probabilities(val_logits, model.temperature), config.threshold_rule)
    model.set_calibration(model.temperature, threshold)
    return model, summary


def train_early_exit(model: FakeFaceModel, config: TrainConfig, train_set, val_set, out_dir, sampler=None) -> dict:
    """Train the fast probe on the first view group's features, or on its first `early_exit_layers` layers (the
    leading slice of every feature vector), calibrate its temperature on validation, and attach it with the
    config's band."""
    layers = list(model.recipe.layers[: config.early_exit_layers or None])
    fast_model = create_model(model.arch, features={**model.recipe.to_config(), "views": [model.recipe.views[0]],
                                                    "layers": layers})
    dim = fast_model.recipe.dim
    first = lambda ds: torch.utils.data.TensorDataset(ds.tensors[0][:, :dim], ds.tensors[1])  # noqa: E731
    fast_train, fast_val = first(train_set), first(val_set)
    fast_model.net.set_standardisation(fast_train.tensors[0])
    summary = fit(fast_model, fast_train, fast_val, config, out_dir, resume=False, sampler_factory=sampler)
    logits, fake = predict_logits(fast_model, torch.utils.data.DataLoader(fast_val, batch_size=64))
    model.attach_early_exit(fast_model.net, fit_temperature(logits, fake), config.early_exit_band, len(layers))
    exits = model.exits(torch.from_numpy(logits)).numpy()
    return {**summary, "band": list(config.early_exit_band), "validation_exit_rate": float(exits.mean())}


def difficulty_groups(ds: datasets.Dataset) -> list[str] | None:
    """ciplab's difficulty per fake ("real" for reals, the source's name for fakes without one), or None when
    no image has a difficulty."""
    if not any(ds["difficulty"]):
        return None
    return [d or ("real" if label == 1 else src) for d, label, src in zip(ds["difficulty"], ds["label"], ds["source"])]


def evaluate_split(model: FakeFaceModel, config: TrainConfig, ds, detector, cache_dir=None, threshold=None,
                   degradation: str | None = None):
    """Metrics of a model on a labelled split (per difficulty when the data has it)."""
    inputs = model_inputs(model, config, ds, False, detector, cache_dir, degradation)
    logits, fake = image_logits(model, inputs, len(ds)), is_fake(ds)
    probs = probabilities(logits, model.temperature)
    threshold = model.threshold if threshold is None else threshold
    metrics = evaluate_predictions(fake, probs, threshold, logits=logits, temperature=model.temperature,
                                   groups=difficulty_groups(ds))
    if len(set(ds["source"])) > 1:
        metrics["per_source"] = per_source_report(fake, probs, ds["source"], threshold)
    if model.early_exit is not None:
        exits = model.exit_mask(inputs.tensors[0]).numpy()  # per face crop, as serving decides
        metrics["early_exit"] = {"band": model.early_exit["band"], "exit_rate": float(exits.mean()),
                                 "n": int(len(exits))}
    return metrics, fake, probs


def train_evaluate_save(source: str, output_dir: str | Path, config: TrainConfig, revision: str | None = None,
                        push_to_hub: str | None = None, limit: int | None = None, cache_dir=None,
                        resume: bool = False) -> dict:
    """The whole recipe: data -> train -> calibrate -> evaluate on the held-out split -> save (-> push).
    `resume` continues the checkpoint in output_dir/run (training.fit refuses one saved with another config).

    Under torchrun every rank trains and evaluates (the same numbers); rank 0 alone saves and pushes, and the
    others return a summary without "model_dir".
    """
    from .model_card import write_model_card

    output_dir = Path(output_dir)
    detector = FaceDetector()
    train_ds, val_ds, test_ds, weights = load_splits(source, config, revision, limit)
    is_main = distributed.world().is_main
    if is_main:
        print(f"data: {len(train_ds)} train, {len(val_ds)} validation, {len(test_ds)} test images")
    model, fit_summary = train_model(config, train_ds, val_ds, output_dir / "run", detector, cache_dir, resume,
                                     weights=weights)
    metrics, fake, probs = evaluate_split(model, config, test_ds, detector, cache_dir)
    metrics["robustness"] = robustness(model, config, test_ds, detector, probs, cache_dir)
    if not is_main:
        return {"test": _headline(metrics), "training": fit_summary}
    metrics["training"] = {**fit_summary, "config": asdict(config), "data": source, "revision": revision,
                           "n_train": len(train_ds), "n_validation": len(val_ds), "n_test": len(test_ds),
                           "sources": _source_counts(train_ds), "source_weights": weights}
    model_dir = output_dir / "model"
    model.save_pretrained(model_dir)
    write_report(metrics, output_dir / "eval", is_fake=fake, fake_prob=probs, threshold=model.threshold)
    write_model_card(model_dir, model, metrics, config, source)
    log = output_dir / "run" / "train_log.jsonl"
    if log.exists():
        (model_dir / "train_log.jsonl").write_text(log.read_text())
    summary = {"model_dir": str(model_dir), "test": _headline(metrics), "training": fit_summary}
    if push_to_hub:
        from .publish import push_model_folder

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


def _source_counts(ds: datasets.Dataset) -> dict:
    counts = Counter(zip(ds["source"], ds["label"]))
    return {src: {"fake": counts[(src, 0)], "real": counts[(src, 1)]} for src in sorted(set(ds["source"]))}


def cross_validate(source, config: TrainConfig, folds: int = 5, output_dir=None, revision=None,
                   limit=None, cache_dir=None, leave_one_source_out: bool = True) -> dict:
    """Stratified k-fold (by label, source and difficulty; face-swap pairs in one fold): each fold trains on
    k-1 parts (with its own validation split for early stopping and calibration) and is scored on the held-out
    part, overall and per source. Reports each fold and mean +- std.

    With several sources and `leave_one_source_out`, also: for every source that has fakes, train on the
    first fold's training part without that source, and score its images against the first fold's held-out
    reals of the other sources (a generator family the model never saw)."""
    detector = FaceDetector()
    data = load_face_sources(source, revision)
    full = _limited(_raw(data.train), limit, config.seed)
    is_main = distributed.world().is_main
    out = Path(output_dir or "crossval")
    results = []
    splits = stratified_kfold(full["label"], folds, config.seed, split_strata(full), full["group"])
    for k, (train_idx, test_idx) in enumerate(splits):
        part = full.select(train_idx)
        tr, va = _split(part, config.val_fraction, config.seed)
        model, _ = train_model(config, part.select(tr), part.select(va), out / f"fold{k}", detector, cache_dir,
                               resume=False, weights=data.weights)
        metrics, _, _ = evaluate_split(model, config, full.select(test_idx), detector, cache_dir)
        results.append({**_headline(metrics), "groups": {g: m["ranking"]["roc_auc"]
                                                          for g, m in metrics.get("groups", {}).items()},
                        **({"per_source": metrics["per_source"]} if "per_source" in metrics else {}),
                        **({"exit_rate": metrics["early_exit"]["exit_rate"]} if "early_exit" in metrics else {})})
        if is_main:
            print(f"fold {k}: {json.dumps(_fold_line(results[-1]))}")
    summary = {"folds": results, "config": asdict(config), "data": source, "source_weights": data.weights}
    early = ("exit_rate",) if "exit_rate" in results[0] else ()  # share of held-out faces the early exit answered
    for key in ("roc_auc", "balanced_accuracy", "accuracy", "ece") + early:
        summary[key] = _mean_std([r[key] for r in results])
    if any("per_source" in r for r in results):
        summary["per_source"] = _per_source_summary([r["per_source"] for r in results])
    sources = sorted(set(full["source"]))
    if leave_one_source_out and len(sources) > 1:
        summary["leave_one_source_out"] = _leave_one_source_out(full, splits[0], config, data.weights, out, detector,
                                                                cache_dir)
    if output_dir and is_main:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "crossval.json").write_text(json.dumps(summary, indent=2))
    return summary


def _fold_line(result: dict) -> dict:
    line = {k: v for k, v in result.items() if k != "per_source"}
    if "per_source" in result:
        line["source_auc"] = {s: round(e["roc_auc"], 4) for s, e in result["per_source"]["sources"].items()}
        line["real_fpr"] = round(result["per_source"]["reals"]["fpr"], 4)
    return line


def _mean_std(values) -> dict:
    values = np.array([v for v in values if v is not None], dtype=float)
    if not len(values):
        return {"mean": None, "std": None}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def _per_source_summary(reports: list[dict]) -> dict:
    """Mean +- std over folds of every source's AUC, TPR, FPR and ECE, and of the overall real-photo FPR."""
    names = sorted({name for r in reports for name in r["sources"]})
    out = {name: {key: _mean_std([r["sources"][name].get(key) for r in reports if name in r["sources"]])
                  for key in ("roc_auc", "tpr", "fpr", "ece")
                  if any(key in r["sources"].get(name, {}) for r in reports)} for name in names}
    return {"sources": out, "real_fpr": _mean_std([r["reals"]["fpr"] for r in reports])}


def _leave_one_source_out(full, fold, config, weights, out: Path, detector, cache_dir) -> dict:
    train_idx, test_idx = fold
    src, label = full["source"], full["label"]
    results = {}
    for held in sorted({src[i] for i in train_idx if label[i] == 0}):
        part = full.select([int(i) for i in train_idx if src[i] != held])
        tr, va = _split(part, config.val_fraction, config.seed)
        model, _ = train_model(config, part.select(tr), part.select(va), out / f"without-{held}", detector,
                               cache_dir, resume=False, weights=weights)
        held_items = [i for i, s in enumerate(src) if s == held]
        other_reals = [int(i) for i in test_idx if src[i] != held and label[i] == 1]
        test = full.select(held_items + other_reals)
        metrics, fake, probs = evaluate_split(model, config, test, detector, cache_dir)
        real = fake == 0
        held_fake = np.array([s == held for s in test["source"]]) & (fake == 1)
        results[held] = {"roc_auc": metrics["ranking"]["roc_auc"],
                         "tpr": float((probs[held_fake] >= model.threshold).mean()),
                         "real_fpr": float((probs[real] >= model.threshold).mean()),
                         "n_fake": int(held_fake.sum()), "n_real": int(real.sum()),
                         "roc_auc_bootstrap_95": metrics["ranking"]["roc_auc_bootstrap_95"]}
        if distributed.world().is_main:
            print(f"without {held}: {json.dumps(results[held])}")
    return results


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
    from tqdm.auto import tqdm

    probs = np.array([predictor.predict_file(_image_source(item)).fake_prob
                      for item in tqdm(ds, desc="evaluate", unit="img")])
    fake = is_fake(ds)
    t = predictor.threshold if threshold is None else threshold
    groups = [g or "real" for g in ds["difficulty"]] if any(ds["difficulty"]) else None
    metrics = evaluate_predictions(fake, probs, t, groups=groups)
    metrics["model"] = predictor.source.describe() if predictor.source else None
    write_report(metrics, output_dir, is_fake=fake, fake_prob=probs, threshold=t)
    return _headline(metrics)
