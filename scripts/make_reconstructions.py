""""Aligned" fakes for the low-level scorer (issue 24, item 2e; B-Free, Rajan et al. 2025): the centre region of
each REAL training face crop goes through a tiny autoencoder (fakeface/tiny_autoencoder.py), and then the real
region and its reconstruction go through the same processing (one JPEG quality drawn per pair, from the image's
hash), so the only difference between the two is the decoder's trace.

Resumable (a restart skips pairs on disk); images are visited in hash order, so any prefix is a random,
source-mixed subset. Writes {sha1}.npz (real, recon: uint8 HxWx3; quality; variant) under --out.
    python scripts/make_reconstructions.py --crops /work/main/runs/views/crops --out /work/main/runs/recon \
        --taesd-dir /tmp/taesd_pth [--variants taef2] [--region 192]
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from fakeface import lowlevel
from fakeface.tiny_autoencoder import LATENT_STRIDE, TinyAutoencoder

DATA = ["../shared/data/" + s for s in ("ciplab", "dfdc", "ffhq-real", "stylegan-boredhumans", "sd21-sdfd")] + \
       ["/work/extra/" + s for s in ("gan-studio", "pixabay-real", "studio-real")]
QUALITY = (75, 95)


def pair_quality(sha1: str) -> int:
    return QUALITY[0] + int(sha1[:8], 16) % (QUALITY[1] - QUALITY[0] + 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", default=None)
    ap.add_argument("--index", default="/work/main/runs/lowlevel/index.json")
    ap.add_argument("--crops", default="/work/main/runs/views/crops")
    ap.add_argument("--out", default="/work/main/runs/recon")
    ap.add_argument("--taesd-dir", default=None, help="folder with the upstream {variant}_{encoder,decoder}.pth")
    ap.add_argument("--variants", nargs="+", default=["taef2"],
                    help="autoencoders to rotate over by image hash (only taef2's weights are in the mirror)")
    ap.add_argument("--region", type=int, default=192)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the feature extraction uses the other core
    models = [TinyAutoencoder.load(v, args.taesd_dir) for v in args.variants]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reals = sorted((r for r in lowlevel.crop_index(args.data or DATA, args.index) if not r["fake"]),
                   key=lambda r: r["sha1"])
    t0, done, missing = time.time(), 0, 0
    for r in reals[:args.limit or None]:
        target = out / f"{r['sha1']}.npz"
        crop_path = Path(args.crops) / f"{r['sha1']}.npy"
        if target.exists():
            continue
        if not crop_path.exists():
            missing += 1
            continue
        region = lowlevel.centre(np.load(crop_path), args.region, LATENT_STRIDE)
        model = models[int(r["sha1"][:8], 16) % len(models)]
        recon = np.asarray(model.round_trip_pil(lowlevel.Image.fromarray(region)))
        q = pair_quality(r["sha1"])
        tmp = target.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, real=lowlevel.jpeg(region, q), recon=lowlevel.jpeg(recon, q), quality=q,
                 variant=model.variant)
        os.replace(tmp, target)
        done += 1
        if done % 100 == 0:
            print(f"{done} pairs, {(time.time() - t0) / done:.2f} s per image", flush=True)
    print(f"{done} pairs made, {missing} crops not extracted yet, "
          f"{(time.time() - t0) / max(done, 1):.2f} s per image", flush=True)


if __name__ == "__main__":
    main()
