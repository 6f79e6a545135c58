"""The model card (README.md beside the weights): huggingface_hub's ModelCard with model-index results."""

from __future__ import annotations

import json

import numpy as np
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = """---
{{ card_data }}
---

# fakeface: {{ arch }}

Detects edited or generated face images ({{ kinds }}). Outputs P(fake), calibrated by temperature scaling
on a validation split of every training source, and a verdict at the one threshold chosen on that same split.

## How to use

```python
from fakeface.predictor import Predictor
predictor = Predictor.load("{{ model_id }}")
print(predictor.predict_file("face.jpg").as_dict())
```

or `fakeface predict face.jpg --model {{ model_id }}`. The answer is REAL or FAKE at the threshold, marked
uncertain within the uncertain band around it. The model judges face crops only: an image in which no face
is found gets no verdict (`verdict` null, `faces_found` 0); its whole-image score is outside what the model
was trained for.

## Training data and its terms

{{ data_text }}

## Results on the held-out test split

{{ results_table }}

Decision threshold (chosen on validation, never on test): {{ threshold }}; temperature: {{ temperature }}.

{{ per_source }}

{{ robustness }}

{{ early_exit }}

{{ extra_sections }}

## Provenance: what the file says about itself

Beside this model's score, `predict_file` (and the Space, its REST route and `fakeface predict`) reads what the
file's own bytes say about where it came from: C2PA Content Credentials (checked offline; a manifest stored
elsewhere is reported as "remote, not fetched"), the IPTC digital source type in XMP, the text fields image
generators write (AUTOMATIC1111, ComfyUI, InvokeAI, NovelAI), and EXIF software and camera fields. None of it is
learned; it enters the verdict by fixed rules:

- Valid signed Content Credentials declaring AI generation or composition (`trainedAlgorithmicMedia`,
  `compositeWithTrainedAlgorithmicMedia`, ...) make the verdict FAKE whatever the score; the score is still shown.
  Without a trust list (`FAKEFACE_C2PA_TRUST_ANCHORS`) the signer is not checked: a valid signature only says the
  file is unchanged since someone signed it.
- Credentials that fail validation (the pixels changed after signing, a damaged manifest) prove nothing.
- Unsigned metadata naming a generator or face app is a hint: it raises a confident REAL to uncertain, never lowers
  a FAKE. Camera EXIF is shown as weak evidence and never used.
- No metadata changes nothing: most platforms strip it on upload.

## Intended use and limits

- Intended: a second opinion when a face photo may have been edited or generated. Not proof of anything:
  always combine with provenance and human review.
- It knows the kinds of fake it was trained on (see the data section); a generator family it never saw may
  pass as REAL. A REAL verdict means "no trace this model knows was found", not "authentic".
- Faces are cropped with the same framing as the training images ({{ detector }}); tiny, heavily compressed or
  non-frontal faces lower accuracy.
- Video (`fakeface predict clip.mp4`, the Space's Video tab, `/predict_video`) is judged from its frames only:
  frames sampled evenly over the clip are scored one by one as still images, faces are followed from frame to
  frame by box overlap, and the clip's verdict follows its most suspicious face track. No audio, no lip-sync,
  no motion or other temporal cue is examined, and the model was trained on photos, not video frames: video
  compression, motion blur and small faces lower accuracy.

## Training configuration

```json
{{ config_json }}
```
"""


def _results_table(metrics: dict) -> str:
    c, r, cal = metrics["classification"], metrics["ranking"], metrics["calibration"]
    auc_ci = r.get("roc_auc_bootstrap_95") or (None, None)
    rows = [
        ("ROC AUC", r["roc_auc"], auc_ci),
        ("Balanced accuracy", c["balanced_accuracy"], None),
        ("Accuracy", c["accuracy"], c.get("wilson_95", {}).get("accuracy")),
        ("Recall (fakes caught)", c["recall"], c.get("wilson_95", {}).get("recall")),
        ("Specificity (reals passed)", c["specificity"], c.get("wilson_95", {}).get("specificity")),
        ("EER", r["eer"], None),
        ("TPR at 1% FPR", r.get("tpr_at_fpr_1pct"), None),
        ("TPR at 2% FPR", r.get("tpr_at_fpr_2pct"), None),
        ("TPR at 5% FPR", r["tpr_at_fpr_5pct"], None),
        ("ECE (15 bins), raw", cal.get("ece_raw_logits"), None),
        ("ECE (15 bins), temperature-scaled", cal.get("ece_temperature_scaled", cal.get("ece")), None),
    ]
    lines = ["| metric | value | 95% interval |", "|---|---|---|"]
    for name, value, ci in rows:
        if value is None:
            continue
        interval = f"{ci[0]:.3f} - {ci[1]:.3f}" if ci and ci[0] is not None else ""
        lines.append(f"| {name} | {value:.3f} | {interval} |")
    n = c.get("n")
    if n:
        lines.append(f"\n{n} test images ({c.get('n_fake')} fake, {c.get('n_real')} real).")
    groups = metrics.get("groups")
    if groups:
        lines.append("\n| group | n | ROC AUC | recall |\n|---|---|---|---|")
        for g, m in groups.items():
            auc = m["ranking"]["roc_auc"]
            lines.append(f"| {g} | {m['n_in_group']} | {auc:.3f} | {m['classification']['recall']:.3f} |"
                         if auc is not None else f"| {g} | {m['n_in_group']} | - | - |")
    return "\n".join(lines)


def _robustness_table(metrics: dict) -> str:
    rob = metrics.get("robustness")
    if not rob:
        return ""
    names = {"jpeg:75": "re-saved as JPEG quality 75", "jpeg:50": "re-saved as JPEG quality 50",
             "resize:0.5": "down-scaled to half size", "mirror": "mirrored", "exif:6": "stored sideways + EXIF rotation"}
    lines = ["## Robustness (the same test images, delivered another way)", "",
             "| test images | ROC AUC | balanced accuracy | verdicts flipped vs clean | mean / max change of P(fake) |",
             "|---|---|---|---|---|"]
    for spec, m in rob.items():
        if spec == "delivery":
            continue
        moved = f"{m['mean_abs_dp']:.3f} / {m['max_abs_dp']:.3f}" if "mean_abs_dp" in m else "-"
        lines.append(f"| {names.get(spec, spec)} | {m['roc_auc']:.3f} | {m['balanced_accuracy']:.3f} | "
                     f"{m['verdict_flips']} of {m['n']} | {moved} |")
    if "delivery" in rob:
        d = rob["delivery"]
        lines.append(f"\nOver the benign copies ({', '.join(names.get(s, s) for s in d['checks'])}): "
                     f"{d['flip_rate']:.1%} of verdicts flip, P(fake) moves {d['mean_abs_dp']:.3f} on average.")
    return "\n".join(lines)


def _early_exit_text(model, metrics: dict) -> str:
    if getattr(model, "early_exit", None) is None:
        return ""
    low, high = model.early_exit["band"]
    rate = metrics.get("early_exit", {}).get("exit_rate")
    side, n = model.recipe.views[0]
    first = f"the whole face at {side} px" if n == 1 else f"{n}x{n} crops of a {side} px resize"
    if model.exit_block is None:
        reads = (f"only the first view group ({first}: {n * n * (2 if model.recipe.mirror else 1)} of the model's "
                 f"{model.recipe.passes} ViT passes)")
        skipped, settled = "the other views are never computed", "the first view group alone"
    else:
        layers = ", ".join(str(b) for b in model.recipe.layers[: model.early_exit["layers"]])
        reads = (f"only blocks {layers} of the first view group ({first}), so the tower stops after block "
                 f"{model.exit_block} of 12")
        skipped, settled = "the later blocks (and any other views) are never computed", "the early blocks alone"
    share = f" {rate:.0%} of the test faces were answered by {settled}." if rate is not None else ""
    return ("## Early exit\n\n"
            f"A second linear probe reads {reads}, calibrated by its own temperature "
            f"({model.early_exit['temperature']:.4f}). When its P(fake) is below {low} or above {high}, that is "
            f"the answer and {skipped}; otherwise the full probe decides. Every figure "
            f"on this card, and the decision threshold, come through this rule.{share} A heat map, when asked "
            "for, is computed from the whole model and shows the full probe's evidence, also for an image the "
            "early exit settled.")


def per_source_table(metrics: dict) -> str:
    """The test split source by source: fakes caught (TPR) and real photos accused (FPR) at the threshold,
    with Wilson 95% intervals, ROC AUC and ECE."""
    report = metrics.get("per_source")
    if not report:
        return ""
    def rate(entry, key):
        if key not in entry:
            return "-"
        lo, hi = entry[f"{key}_wilson_95"]
        return f"{entry[key]:.3f} ({lo:.2f}-{hi:.2f})"
    lines = ["## Per source (held-out test split)", "",
             "| source | fakes | reals | ROC AUC | fakes called FAKE | reals called FAKE | ECE |", "|---|---|---|---|---|---|---|"]
    for name, e in report["sources"].items():
        auc = f"{e['roc_auc']:.3f}" if e["roc_auc"] is not None else "-"
        lines.append(f"| {name} | {e['n_fake']} | {e['n_real']} | {auc} | {rate(e, 'tpr')} | {rate(e, 'fpr')} | "
                     f"{e['ece']:.3f} |")
    reals = report["reals"]
    lo, hi = reals["fpr_wilson_95"]
    lines.append(f"\nAll real photos of the test split: {reals['fpr']:.3f} called FAKE ({lo:.2f}-{hi:.2f}). A source "
                 "with one class is ranked against all test images of the other class.")
    return "\n".join(lines)


def source_crossval_table(cv: dict) -> str:
    """Per-source mean ± std over folds, then leave-one-family-out rows (one kind of fake never trained on)."""
    lines = []
    if cv.get("per_source"):
        lines += ["| source | ROC AUC | fakes called FAKE | reals called FAKE | ECE |", "|---|---|---|---|---|"]
        for name, e in cv["per_source"]["sources"].items():
            cell = lambda k: f"{e[k]['mean']:.3f} ± {e[k]['std']:.3f}" if k in e and e[k]["mean"] is not None else "-"  # noqa: E731
            lines.append(f"| {name} | {cell('roc_auc')} | {cell('tpr')} | {cell('fpr')} | {cell('ece')} |")
        rf = cv["per_source"]["real_fpr"]
        lines.append(f"\nReal photos called FAKE, all sources: {rf['mean']:.3f} ± {rf['std']:.3f}.")
    # crossval.json files written before families were grouped name the same runs by source
    lofo = cv.get("leave_one_family_out") or cv.get("leave_one_source_out")
    if lofo:
        lines += ["", "Leave one kind of fake out (trained without every source of that family; its images against "
                  "held-out reals of the others):", "",
                  "| held-out family (sources) | ROC AUC (95% bootstrap) | its fakes called FAKE | other reals called FAKE |",
                  "|---|---|---|---|"]
        for name, e in lofo.items():
            lo, hi = e["roc_auc_bootstrap_95"]
            held = f"{name} ({', '.join(e['sources'])})" if "sources" in e else name
            lines.append(f"| {held} | {e['roc_auc']:.3f} ({lo:.2f}-{hi:.2f}) | {e['tpr']:.3f} | {e['real_fpr']:.3f} |")
    return "\n".join(lines)


def crossval_table(summaries: dict[str, dict]) -> str:
    """Rows of mean +- std over folds, one per recipe (name -> crossval.json content)."""
    lines = ["| recipe | folds | ROC AUC | balanced accuracy | ECE | easy / mid / hard AUC |", "|---|---|---|---|---|---|"]
    for name, cv in summaries.items():
        def ms(key):
            return f"{cv[key]['mean']:.3f} ± {cv[key]['std']:.3f}"

        groups = [np.mean([f["groups"].get(g, np.nan) for f in cv["folds"]]) for g in ("easy", "mid", "hard")]
        lines.append(f"| {name} | {len(cv['folds'])} | {ms('roc_auc')} | {ms('balanced_accuracy')} | {ms('ece')} | "
                     + " / ".join(f"{g:.3f}" for g in groups) + " |")
    return "\n".join(lines)


def _sources_text(data_source: str, sources: dict) -> str:
    if not sources:
        return f"Trained on `{data_source}`."
    rows = ["| source | fake | real |", "|---|---|---|"] + [f"| {n} | {c['fake']} | {c['real']} |" for n, c in sources.items()]
    return f"Trained on `{data_source}` (training split):\n\n" + "\n".join(rows)


def _detector_text(crop: dict | None) -> str:
    """How training found faces, from the config's crop settings (faces.crop_settings)."""
    if not crop:
        return "face detector not recorded"
    names = {"blazeface": "BlazeFace short range", "mtcnn": "MTCNN", "haar": "OpenCV's Haar cascade"}
    found = names.get(crop.get("detector"), crop.get("detector", "none"))
    if crop.get("detector") == "blazeface" and crop.get("fallback") not in (None, "none"):
        return f"faces found by {found} where the face fills the frame, else by {names[crop['fallback']]}"
    return f"faces found by {found}" if crop.get("detector") != "none" else "whole images, no face detection"


def write_model_card(model_dir, model, metrics: dict, config, data_source, model_id: str = "MODEL_DIR",
                     extra_sections: str = "", data_text: str | None = None, kinds: str | None = None) -> Path:
    """Write README.md with YAML metadata (model-index eval results) and the figures above."""
    r, c = metrics["ranking"], metrics["classification"]
    if not isinstance(data_source, str):
        data_source = " + ".join(data_source)
    sources = metrics.get("training", {}).get("sources") or {}
    results = [EvalResult(task_type="image-classification", dataset_type="imagefolder", dataset_name=data_source,
                          dataset_split="test", metric_type=name, metric_name=name, metric_value=round(value, 4))
               for name, value in (("roc_auc", r["roc_auc"]), ("balanced_accuracy", c["balanced_accuracy"]),
                                   ("accuracy", c["accuracy"])) if value is not None]
    card_data = ModelCardData(library_name="fakeface", license="apache-2.0", pipeline_tag="image-classification",
                              tags=["deepfake-detection", "fake-face-detection", "image-forensics"],
                              model_name=f"fakeface-{model.arch}", eval_results=results)
    card = ModelCard.from_template(
        card_data, template_str=TEMPLATE, arch=model.arch, model_id=model_id,
        data_text=data_text or _sources_text(data_source, sources), results_table=_results_table(metrics),
        kinds=kinds or "the kinds of fake in its training sources", per_source=per_source_table(metrics),
        threshold=f"{model.threshold:.4f}", robustness=_robustness_table(metrics), temperature=f"{model.temperature:.4f}",
        early_exit=_early_exit_text(model, metrics), extra_sections=extra_sections,
        detector=_detector_text(model.config.crop),
        config_json=json.dumps(asdict(config), indent=2))
    path = Path(model_dir) / "README.md"
    card.save(path)
    return path
