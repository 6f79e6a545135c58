"""A low-level second scorer (issue 24, item 2d): a small CNN on high-pass residuals of the face crop at its
NATIVE resolution (resizing smooths generator traces away), one logit per face (positive = fake).

The residual is NPR-like: r = x - nearest_up(nearest_down_2x(x)), the part of each 2x2 cell that a 2x
nearest-neighbour upsampling cannot produce; generators and decoders that upsample leave their trace there.
Training reads random tiles; degradations (rescale, JPEG) are drawn for both classes alike, so "how the
image was processed" cannot become the label. Scoring is deterministic: the centre region (at most
SCORE_REGION px a side) and its mirror, averaged. CPU only, one thread is enough.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import FakefaceError

TILE = 64
SCORE_REGION = 192
RESCALE_P, RESCALE = 0.3, (0.5, 1.5)
JPEG_P, JPEG_Q = 0.7, (60, 95)
RESAMPLE = (Image.BILINEAR, Image.BICUBIC, Image.LANCZOS)


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W), H and W even -> x minus its 2x nearest down-then-up copy."""
    return x - F.interpolate(x[..., ::2, ::2], scale_factor=2, mode="nearest")


class LowLevelNet(nn.Module):
    """Residual -> five 3x3 convolutions (two stride-2) -> global average pool -> one logit (~70 K params)."""

    def __init__(self, width: int = 16, residual_gain: float = 8.0):
        super().__init__()
        self.config = {"width": width, "residual_gain": residual_gain}
        w = width

        def block(n_in, n_out, stride=1):
            return [nn.Conv2d(n_in, n_out, 3, stride, 1, bias=False), nn.BatchNorm2d(n_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(3, w), *block(w, 2 * w, 2), *block(2 * w, 2 * w),
                                      *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w))
        self.head = nn.Linear(4 * w, 1)
        self.gain = residual_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W even -> (B,) fake logits."""
        h = self.features(npr_residual(x) * self.gain)
        return self.head(h.mean(dim=(2, 3)))[:, 0]


# ---------------------------------------------------------------- pixels
def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def centre(pixels: np.ndarray, side: int, multiple: int = 2) -> np.ndarray:
    """The centre region of at most `side` px a side, dimensions rounded down to `multiple`."""
    h, w = pixels.shape[:2]
    th, tw = min(side, h) // multiple * multiple, min(side, w) // multiple * multiple
    if th == 0 or tw == 0:
        raise FakefaceError(f"the face crop ({w}x{h} px) is too small for the low-level scorer")
    y, x = (h - th) // 2, (w - tw) // 2
    return pixels[y:y + th, x:x + tw]


def training_tile(pixels: np.ndarray, rng: random.Random, tile: int = TILE) -> np.ndarray:
    """One random tile, degraded the same way whatever its class: sometimes rescaled (down or up, a random
    filter), often JPEG re-encoded, mirrored half the time. Crops smaller than a tile are upscaled first."""
    h, w = pixels.shape[:2]
    s = rng.uniform(*RESCALE) if rng.random() < RESCALE_P else 1.0
    s = max(s, tile / min(h, w))  # never a tile larger than the (rescaled) crop
    need = min(h, w, int(np.ceil(tile / s)) + 2)  # source window that covers one tile after rescaling
    y, x = rng.randint(0, h - need), rng.randint(0, w - need)
    window = pixels[y:y + need, x:x + need]
    if s != 1.0:
        side = max(tile, round(need * s))
        window = np.asarray(Image.fromarray(window).resize((side, side), rng.choice(RESAMPLE)))
    oy, ox = rng.randint(0, window.shape[0] - tile), rng.randint(0, window.shape[1] - tile)
    # any offset: the 2x2 grid's phase is random here, as it is in an upload cropped anywhere
    out = window[oy:oy + tile, ox:ox + tile]
    if rng.random() < JPEG_P:
        out = jpeg(np.ascontiguousarray(out), rng.randint(*JPEG_Q))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------- training and scoring
def train(crops: list[np.ndarray], fake: np.ndarray, strata: list[str], steps: int = 1500, batch: int = 32,
          lr: float = 3e-3, seed: int = 0, tile: int = TILE, log_every: int = 0) -> LowLevelNet:
    """Train on random tiles, each batch balanced over (stratum, class) groups so no source outweighs another.
    `fake` is 1 for fakes, 0 for reals; `strata` names each crop's group (e.g. source|class)."""
    fake = np.asarray(fake, dtype=np.float32)
    if len(crops) != len(fake) or len(crops) != len(strata) or len(set(fake.tolist())) < 2:
        raise FakefaceError("low-level training needs crops, labels and strata of one length, with both classes")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(f"{s}|{int(fake[i])}", []).append(i)
    keys = sorted(groups)
    # half the batch from fake groups, half from real groups, uniformly over groups within a class
    by_class = {c: [k for k in keys if k.endswith(f"|{c}")] for c in (0, 1)}
    model = LowLevelNet()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    running = 0.0
    for step in range(steps):
        idx = [rng.choice(groups[rng.choice(by_class[i % 2])]) for i in range(batch)]
        x = torch.stack([to_tensor(training_tile(crops[i], rng, tile)) for i in idx])
        y = torch.from_numpy(fake[idx])
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps} loss {running:.3f}", flush=True)
    return model.eval()


@torch.no_grad()
def crop_logits(model: LowLevelNet, crops: list[np.ndarray], region: int = SCORE_REGION) -> np.ndarray:
    """Deterministic fake logits: the centre region and its mirror, averaged."""
    model.eval()
    out = []
    for pixels in crops:
        x = to_tensor(centre(pixels, region))[None]
        out.append(float(model(torch.cat([x, x.flip(-1)])).mean()))
    return np.asarray(out, dtype=np.float64)


def face_logit(model: LowLevelNet, face: Image.Image) -> float:
    """Serving: one PIL face crop (unresized) -> the low-level fake logit."""
    return float(crop_logits(model, [np.asarray(face.convert("RGB"), dtype=np.uint8)])[0])


def save(model: LowLevelNet, path: str | Path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"config": json.dumps(model.config), "region": str(SCORE_REGION)})


def load(path: str | Path) -> LowLevelNet:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FakefaceError(f"no low-level scorer at {path}")
    with safe_open(str(path), "pt") as f:
        config = json.loads((f.metadata() or {}).get("config", "{}"))
    model = LowLevelNet(**config)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


# ---------------------------------------------------------------- the training mix's crop cache
def crop_index(specs: list[str], cache: str | Path | None = None) -> list[dict]:
    """Every training image as {sha1, path, source, fake, group}: sha1 of the file's bytes names its cached
    face crop (scripts/experiments/extract_views.py); group keeps a face swap with its original. Cached as
    JSON at `cache` (hashing every file takes a while)."""
    import hashlib

    from .data import load_face_sources

    if cache and Path(cache).is_file():
        return json.loads(Path(cache).read_text())
    ds = load_face_sources(specs, validate=False).train
    rows = []
    for path, label, source, group in zip(ds["path"], ds["label"], ds["source"], ds["group"]):
        rows.append({"sha1": hashlib.sha1(Path(path).read_bytes()).hexdigest(), "path": path, "source": source,
                     "fake": int(label == 0), "group": group})
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        Path(cache).write_text(json.dumps(rows))
    return rows
