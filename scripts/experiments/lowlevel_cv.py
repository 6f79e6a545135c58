"""Measure the low-level scorer (fakeface/lowlevel.py; issue 24, items 2d and 2e) on the training mix's cached
face crops (runs/views/crops, written by extract_views.py), with and without the aligned reconstructions of
scripts/make_reconstructions.py as extra training pairs:

- cv:VARIANT     k-fold CV stratified by source and class (a DFDC swap stays with its original): per-source
                 AUC, fakes caught and reals flagged at the threshold that flags 5% of the held-out ordinary
                 reals (ciplab, dfdc, ffhq); writes every image's out-of-fold logit (cv_plain -> oof.json);
- lofo-FAMILY:VARIANT  train on fold 0's training part without the family's fakes, score the family's fakes
                 against fold 0's held-out reals (writes lofo_{family}.json, lofo_{family}_recon.json);
- full:VARIANT   one model on everything, saved as safetensors for serving;
- pairs:VARIANT  train on fold 0's training part, score fold 0's held-out reconstruction pairs (a reconstruction
                 against its own processed real: did the scorer learn the decoder's trace?).
Every scored run also scores the held-out reals half-sized and re-saved at JPEG q75 (does the scorer accuse a
real photo for how it was delivered?). Each run's figures go to results_{run}.json as it ends (resumable).
    PYTHONPATH=. python scripts/experiments/lowlevel_cv.py --runs cv:plain lofo-gan:plain ... [--steps 800]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from fakeface import lowlevel
from fakeface.data import difficulty_from_name, stratified_kfold

DATA = ["../shared/data/" + s for s in ("ciplab", "dfdc", "ffhq-real", "stylegan-boredhumans", "sd21-sdfd")] + \
       ["/work/extra/" + s for s in ("gan-studio", "pixabay-real", "studio-real")]
FAMILIES = {"gan": {"stylegan-boredhumans", "gan-studio"}, "diffusion": {"sd21-sdfd"}}
POLISHED = {"pixabay-real", "studio-real"}
KEEP = 256  # the centre region kept in memory: tiles and the scored region come from it
FLAG_RATE = 0.05


def load_crops(rows, crops_dir):
    crops, kept = [], []
    for r in rows:
        p = Path(crops_dir) / f"{r['sha1']}.npy"
        if p.exists():
            crops.append(np.array(lowlevel.centre(np.load(p), KEEP)))
            kept.append(r)
    return crops, kept


def load_pairs(rows, recon_dir):
    """sha1 -> (processed real region, its reconstruction) for the reals that have one."""
    pairs = {}
    for r in rows:
        p = Path(recon_dir) / f"{r['sha1']}.npz"
        if not r["fake"] and p.exists():
            with np.load(p) as d:
                pairs[r["sha1"]] = (d["real"], d["recon"])
    return pairs


def delivered(pixels, how):
    """A held-out real as it may arrive: half-sized (bicubic) or re-saved at JPEG q75."""
    if how == "half":
        im = Image.fromarray(pixels)
        return np.asarray(im.resize((max(2, im.width // 2), max(2, im.height // 2)), Image.BICUBIC))
    return lowlevel.jpeg(pixels, 75)


def train_set(rows, crops, idx, pairs, variant):
    xs = [crops[i] for i in idx]
    fake = [rows[i]["fake"] for i in idx]
    strata = [rows[i]["source"] for i in idx]
    if variant == "recon":
        for i in idx:
            if rows[i]["sha1"] in pairs:
                real, recon = pairs[rows[i]["sha1"]]
                xs += [real, recon]
                fake += [0, 1]
                strata += ["recon", "recon"]
    return xs, np.array(fake), strata


def auc(pos, neg):
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), np.r_[pos, neg])) if len(pos) and len(neg) else None


def figures(rows, logits, delivered_logits, test_idx):
    """Per-source AUC and rates at the threshold that flags FLAG_RATE of the held-out ordinary reals."""
    src = np.array([rows[i]["source"] for i in test_idx])
    fake = np.array([rows[i]["fake"] for i in test_idx])
    z = np.array([logits[rows[i]["sha1"]] for i in test_idx])
    ordinary = (fake == 0) & ~np.isin(src, list(POLISHED))
    t = float(np.quantile(z[ordinary], 1 - FLAG_RATE))
    reals, fakes = z[fake == 0], z[fake == 1]
    out = {"threshold": t, "n": len(test_idx), "auc_all": auc(fakes, reals), "sources": {}}
    for s in sorted(set(src)):
        m = src == s
        row = {"n_fake": int((m & (fake == 1)).sum()), "n_real": int((m & (fake == 0)).sum())}
        if row["n_fake"]:
            row["auc_vs_all_reals"] = auc(z[m & (fake == 1)], reals)
            row["caught"] = float((z[m & (fake == 1)] > t).mean())
        if row["n_real"]:
            row["auc_all_fakes_vs_these"] = auc(fakes, z[m & (fake == 0)])
            row["flagged"] = float((z[m & (fake == 0)] > t).mean())
        if row["n_fake"] and row["n_real"]:
            row["auc_within"] = auc(z[m & (fake == 1)], z[m & (fake == 0)])
        out["sources"][s] = row
    out["polished_flagged"] = float((z[(fake == 0) & np.isin(src, list(POLISHED))] > t).mean())
    for how, d in delivered_logits.items():
        ids = [rows[i]["sha1"] for i in test_idx if rows[i]["sha1"] in d]
        dz = np.array([d[k] for k in ids])
        clean = np.array([logits[k] for k in ids])
        out[f"reals_{how}"] = {"flagged": float((dz > t).mean()), "flagged_clean": float((clean > t).mean()),
                               "mean_dlogit": float((dz - clean).mean()),
                               "mean_abs_dlogit": float(np.abs(dz - clean).mean()),
                               "auc_fakes_vs_these": auc(fakes, dz)}
    return out


def score(model, rows, crops, idx):
    z = lowlevel.crop_logits(model, [crops[i] for i in idx])
    return {rows[i]["sha1"]: float(v) for i, v in zip(idx, z)}


def score_delivered(model, rows, crops, idx):
    reals = [i for i in idx if not rows[i]["fake"]]
    return {how: {rows[i]["sha1"]: float(v) for i, v in
                  zip(reals, lowlevel.crop_logits(model, [delivered(crops[i], how) for i in reals]))}
            for how in ("half", "q75")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=["cv:plain", "lofo-gan:plain", "lofo-diffusion:plain",
                                                  "lofo-gan:recon", "lofo-diffusion:recon", "cv:recon"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-folds", type=int, default=0, help="stop a cv run after this many folds (0: all)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--index", default="/work/main/runs/lowlevel/index.json")
    ap.add_argument("--crops", default="/work/main/runs/views/crops")
    ap.add_argument("--recon", default="/work/main/runs/recon")
    ap.add_argument("--out", default="/work/main/runs/lowlevel")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    every = lowlevel.crop_index(DATA, args.index)
    # the folds `fakeface crossval` and multisource_recipes.py use (label, source|difficulty, DFDC pairs
    # together, seed 0, the mix's order), so these logits stack with the CLIP probe's out-of-fold scores
    folds = stratified_kfold([1 - r["fake"] for r in every], args.folds, seed=0,
                             strata=[f"{r['source']}|{difficulty_from_name(r['path'])}" for r in every],
                             groups=[r["group"] for r in every])
    fold_of = {every[i]["sha1"]: f for f, (_, va) in enumerate(folds) for i in va}
    crops, rows = load_crops(every, args.crops)
    pairs = load_pairs(rows, args.recon)
    print(f"{len(rows)} of {len(every)} crops, {len(pairs)} reconstruction pairs loaded in {time.time() - t0:.0f} s",
          flush=True)
    folds = [(np.array([i for i, r in enumerate(rows) if fold_of[r["sha1"]] != f]),
              np.array([i for i, r in enumerate(rows) if fold_of[r["sha1"]] == f])) for f in range(args.folds)]
    meta = {"steps": args.steps, "batch": args.batch, "tile": lowlevel.TILE, "region": lowlevel.SCORE_REGION,
            "folds": args.folds, "n_crops": len(rows), "n_pairs": len(pairs)}
    for run in args.runs:
        kind, variant = run.split(":")
        name = f"{kind}_{variant}"
        if (out / f"results_{name}.json").exists():
            print(f"{name}: done before, skipped", flush=True)
            continue
        t1 = time.time()
        if kind == "full":
            model = lowlevel.train(*train_set(rows, crops, range(len(rows)), pairs, variant),
                                   steps=args.steps, batch=args.batch)
            lowlevel.save(model, out / f"lowlevel_{variant}.safetensors")
            result = {**meta, "seconds": time.time() - t1}
        elif kind == "pairs":
            # did it learn the decoder's trace? held-out reconstructions against their own processed reals
            tr, va = folds[0]
            model = lowlevel.train(*train_set(rows, crops, tr, pairs, variant), steps=args.steps, batch=args.batch)
            held = [pairs[rows[i]["sha1"]] for i in va if rows[i]["sha1"] in pairs]
            real, recon = (lowlevel.crop_logits(model, [p[k] for p in held]) for k in (0, 1))
            result = {**meta, "seconds": time.time() - t1, "n_held_out_pairs": len(held),
                      "auc_recon_vs_processed_real": auc(recon, real),
                      "recon_higher_than_its_real": float((recon > real).mean())}
        elif kind == "cv":
            logits, dlog, done = {}, {"half": {}, "q75": {}}, []
            for f, (tr, va) in enumerate(folds[:args.max_folds or None]):
                model = lowlevel.train(*train_set(rows, crops, tr, pairs, variant), steps=args.steps,
                                       batch=args.batch, seed=f)
                logits.update(score(model, rows, crops, va))
                for how, d in score_delivered(model, rows, crops, va).items():
                    dlog[how].update(d)
                done += list(va)
                print(f"{name} fold {f}: {time.time() - t1:.0f} s", flush=True)
            suffix = "" if variant == "plain" else f"_{variant}"
            (out / f"oof{suffix}.json").write_text(json.dumps({
                "logits": logits, "fold": {k: fold_of[k] for k in logits},
                "folds": [[rows[i]["sha1"] for i in va] for _, va in folds], "delivered": dlog, **meta}))
            result = {**meta, "seconds": time.time() - t1, **figures(rows, logits, dlog, done),
                      "fold_auc": [auc([logits[rows[i]["sha1"]] for i in va if rows[i]["fake"]],
                                       [logits[rows[i]["sha1"]] for i in va if not rows[i]["fake"]])
                                   for _, va in folds[:args.max_folds or None]]}
        else:
            family = FAMILIES[kind.split("-", 1)[1]]
            tr, va = folds[0]
            tr = [i for i in tr if not (rows[i]["fake"] and rows[i]["source"] in family)]
            test = sorted(set(va) | {i for i, r in enumerate(rows) if r["fake"] and r["source"] in family})
            model = lowlevel.train(*train_set(rows, crops, tr, pairs, variant), steps=args.steps,
                                   batch=args.batch)
            logits = score(model, rows, crops, test)
            dlog = score_delivered(model, rows, crops, test)
            suffix = "" if variant == "plain" else f"_{variant}"
            (out / f"{kind.replace('-', '_')}{suffix}.json").write_text(json.dumps({"logits": logits, **meta}))
            result = {**meta, "seconds": time.time() - t1, "family": sorted(family),
                      **figures(rows, logits, dlog, test)}
            fam = np.array([logits[rows[i]["sha1"]] for i in test if rows[i]["fake"] and rows[i]["source"] in family])
            held_reals = np.array([logits[rows[i]["sha1"]] for i in va if not rows[i]["fake"]])
            result.update(family_auc=auc(fam, held_reals), family_caught=float((fam > result["threshold"]).mean()))
        if kind == "cv" and variant != "plain" and args.max_folds and (out / "oof.json").exists():
            # the plain scorer on the same folds (its logits are out of fold too), for a like-for-like table
            plain = json.loads((out / "oof.json").read_text())
            same = figures(rows, plain["logits"], plain.get("delivered", {}), done)
            (out / f"results_cv_plain_same_folds_as_{variant}.json").write_text(json.dumps(same, indent=1))
            print(table(f"cv_plain on the same {args.max_folds} folds", same), flush=True)
        (out / f"results_{name}.json").write_text(json.dumps(result, indent=1))
        print(f"{name}: {time.time() - t1:.0f} s", flush=True)
        print(table(name, result), flush=True)


def _f(x, spec=".3f"):
    return "n/a" if x is None or x != x else format(x, spec)


def table(name, r):
    if "sources" not in r:
        return f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k.startswith(("auc", "recon")))
    family = (f"; held-out family {'+'.join(r['family'])}: AUC {_f(r['family_auc'])} vs held-out reals, "
              f"caught {_f(r['family_caught'], '.1%')}") if "family" in r else ""
    lines = [f"== {name}{family}\nAUC all {_f(r['auc_all'])}, threshold {r['threshold']:.2f} (flags {FLAG_RATE:.0%} of "
             f"held-out ordinary reals), polished reals flagged {_f(r['polished_flagged'], '.1%')}",
             f"{'source':22s} {'fakes':>5s} {'reals':>5s} {'AUC':>6s} {'caught':>7s} {'flagged':>7s}"]
    for s, v in r["sources"].items():
        a = v.get("auc_within", v.get("auc_vs_all_reals", v.get("auc_all_fakes_vs_these")))
        lines.append(f"{s:22s} {v['n_fake']:5d} {v['n_real']:5d} {_f(a):>6s} "
                     f"{_f(v.get('caught'), '.1%'):>7s} {_f(v.get('flagged'), '.1%'):>7s}")
    for how in ("half", "q75"):
        if f"reals_{how}" not in r:
            continue
        d = r[f"reals_{how}"]
        lines.append(f"reals {how}: flagged {d['flagged']:.1%} (clean {d['flagged_clean']:.1%}), mean dlogit "
                     f"{d['mean_dlogit']:+.2f}, mean |dlogit| {d['mean_abs_dlogit']:.2f}, AUC fakes vs these "
                     f"{_f(d['auc_fakes_vs_these'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
