"""Issue 24, lever (c): a patch-level head instead of the patch mean. Each patch token of the largest face
(blocks 6 and 11, saved by extract_views.py) gets a linear score; the image's logit pools them by max, by
attention (softmax over a learned relevance score) or by mean (the patch-mean probe, for reference). Same
folds, balancing and report as clip_levers.py (leave-one-family-out included).
    python scripts/experiments/patch_heads.py --data A --data B ... --pool max attention mean
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clip_levers import balanced_weights, digests, held_out_groups, run_folds, summarise
from fakeface.data import load_face_sources, split_strata, stratified_kfold
from fakeface.pipeline import _raw


class PatchHead(nn.Module):
    def __init__(self, dim: int, pool: str):
        super().__init__()
        self.score, self.pool = nn.Linear(dim, 1), pool
        self.relevance = nn.Linear(dim, 1) if pool == "attention" else None

    def forward(self, tokens):  # (batch, patches, dim)
        s = self.score(tokens).squeeze(-1)
        if self.pool == "max":
            return torch.logsumexp(s * 4, dim=1) / 4  # a smooth max: every patch gets some gradient
        if self.pool == "attention":
            return (torch.softmax(self.relevance(tokens).squeeze(-1), dim=1) * s).sum(1)
        return s.mean(1)


def fit_predict(x_tr, y_tr, w_tr, x_te, pool: str, epochs: int = 8, seed: int = 0) -> np.ndarray:
    torch.manual_seed(seed)
    mean = x_tr.float().mean((0, 1))
    std = x_tr.float().std((0, 1)) + 1e-3
    head = PatchHead(x_tr.shape[-1], pool)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.05)
    y_t, w_t = torch.tensor(y_tr, dtype=torch.float32), torch.tensor(w_tr, dtype=torch.float32)
    for _ in range(epochs):
        for idx in torch.randperm(len(y_t)).split(64):
            loss = (nn.functional.binary_cross_entropy_with_logits(
                head((x_tr[idx].float() - mean) / std), y_t[idx], reduction="none") * w_t[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return torch.cat([head((b.float() - mean) / std) for b in x_te.split(256)]).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--pool", nargs="+", default=["max", "attention", "mean"])
    ap.add_argument("--views", default="runs/views")
    ap.add_argument("--out", default="runs/patch_heads.json")
    ap.add_argument("--oof-dir", default=None)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = _raw(load_face_sources(args.data).train)
    keys, sources = digests(ds), np.array(ds["source"])
    y = 1 - np.array(ds["label"])
    held = held_out_groups(sources, y)
    x = torch.from_numpy(np.stack([np.load(Path(args.views) / "patches" / f"{k}.npy") for k in keys]))
    x = x.permute(0, 2, 1, 3).reshape(len(keys), x.shape[2], -1)  # (images, 196, blocks x 768)
    folds = stratified_kfold(ds["label"], args.folds, 0, split_strata(ds), ds["group"])
    results = {}
    for pool in args.pool:
        def fit_rows(tr, te):
            return fit_predict(x[tr], y[tr], balanced_weights(sources[tr], y[tr]), x[te], pool)

        results[pool] = summarise(f"patch-{pool}", *run_folds(fit_rows, folds, y, held), y, sources, keys,
                                  args.oof_dir)
        Path(args.out).write_text(json.dumps(results, indent=2))

if __name__ == "__main__":
    main()
