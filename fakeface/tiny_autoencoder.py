"""Tiny latent-diffusion autoencoders (TAESD family), for "aligned" fakes: a real face passed through an
encoder and decoder comes back with the decoder's upsampling trace and nothing else changed (B-Free, Rajan
et al. 2025), which is training data for the low-level scorer (issue 24, item 2e).

The architecture is that of madebyollin/taesd (https://github.com/madebyollin/taesd, MIT licence,
Copyright (c) 2023 Ollin Boer Bohan), re-written here from its description: 3x3 convolutions of 64 channels,
residual blocks of three convolutions, three stride-2 steps down (encoder) and three nearest-neighbour 2x
upsamplings (decoder), a tanh clamp on the latents. FLUX.2's variant (`taef2`, 32 latent channels) adds, in
the blocks next to the latents, a pooled branch (1x1 conv -> GroupNorm(4) -> ReLU -> 1x1 conv) added to the
block's input. Images are RGB in [0, 1]; latents are (C, H/8, W/8).

Weights: the upstream `.pth` files (`{variant}_encoder.pth`, `{variant}_decoder.pth`) are read with
`torch.load(weights_only=True)` once and converted to safetensors in a cache folder (never committed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import FakefaceError

# variant -> (latent channels, pooled group-norm branch in the blocks next to the latents)
VARIANTS = {"taesd": (4, False), "taesdxl": (4, False), "taef1": (16, False), "taef2": (32, True)}
CACHE_DIR = Path(os.environ.get("FAKEFACE_TAESD_CACHE", Path.home() / ".cache" / "fakeface" / "taesd"))
LATENT_STRIDE = 8


def _conv(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class LatentClamp(nn.Module):
    """Soft clamp of the latents to about [-3, 3] before decoding."""

    def forward(self, x):
        return torch.tanh(x / 3) * 3


class ResBlock(nn.Module):
    """Three 3x3 convolutions with a residual skip; optionally a pooled group-norm branch added first."""

    def __init__(self, channels: int = 64, pooled_norm: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if pooled_norm:
            wide = channels * 4
            self.pool = nn.Sequential(nn.Conv2d(channels, wide, 1, bias=False), nn.GroupNorm(4, wide),
                                      nn.ReLU(inplace=True), nn.Conv2d(wide, channels, 1, bias=False))

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def _stage(pooled_norm: bool = False) -> list:
    return [ResBlock(pooled_norm=pooled_norm) for _ in range(3)]


def _upsample() -> list:
    return [nn.Upsample(scale_factor=2), _conv(64, 64, bias=False)]


def build_encoder(variant: str) -> nn.Sequential:
    latent, pooled = _variant(variant)
    # layer order (and so the state-dict keys) follows the upstream checkpoints
    return nn.Sequential(
        _conv(3, 64), ResBlock(),
        _conv(64, 64, stride=2, bias=False), *_stage(),
        _conv(64, 64, stride=2, bias=False), *_stage(),
        _conv(64, 64, stride=2, bias=False), *_stage(pooled),
        _conv(64, latent),
    )


def build_decoder(variant: str) -> nn.Sequential:
    latent, pooled = _variant(variant)
    return nn.Sequential(
        LatentClamp(), _conv(latent, 64), nn.ReLU(),
        *_stage(pooled), *_upsample(),
        *_stage(), *_upsample(),
        *_stage(), *_upsample(),
        ResBlock(), _conv(64, 3),
    )


def _variant(variant: str) -> tuple[int, bool]:
    if variant not in VARIANTS:
        raise FakefaceError(f"unknown tiny autoencoder {variant!r}: use one of {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def pth_to_safetensors(pth: str | Path, out: str | Path) -> Path:
    """Convert an upstream `.pth` state dict (plain tensors only: weights_only=True) to safetensors."""
    state = torch.load(pth, map_location="cpu", weights_only=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return out


def _weights(variant: str, part: str, pth_dir: str | Path | None, cache_dir: Path) -> Path:
    cached = cache_dir / f"{variant}_{part}.safetensors"
    if cached.exists():
        return cached
    pth = Path(pth_dir or ".") / f"{variant}_{part}.pth"
    if not pth.exists():
        raise FakefaceError(f"no weights for {variant} {part}: put {pth.name} (madebyollin/taesd) in {pth.parent} "
                            f"or {cached.name} in {cache_dir}")
    return pth_to_safetensors(pth, cached)


class TinyAutoencoder(nn.Module):
    """One TAESD-family autoencoder: `round_trip` gives an image back through its latents."""

    def __init__(self, variant: str = "taef2"):
        super().__init__()
        self.variant = variant
        self.encoder = build_encoder(variant)
        self.decoder = build_decoder(variant)

    @classmethod
    def load(cls, variant: str = "taef2", pth_dir: str | Path | None = None,
             cache_dir: str | Path = CACHE_DIR) -> "TinyAutoencoder":
        model = cls(variant)
        for part, module in (("encoder", model.encoder), ("decoder", model.decoder)):
            module.load_state_dict(load_file(str(_weights(variant, part, pth_dir, Path(cache_dir)))))
        return model.eval()

    @torch.no_grad()
    def round_trip(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of 8 -> the decoded images, same shape, clamped to [0, 1]."""
        h, w = images.shape[-2:]
        if h % LATENT_STRIDE or w % LATENT_STRIDE:
            raise FakefaceError(f"tiny autoencoder input must be a multiple of {LATENT_STRIDE} px, got {w}x{h}")
        return self.decoder(self.encoder(images)).clamp(0, 1)

    def round_trip_pil(self, image: Image.Image) -> Image.Image:
        """An RGB PIL image (sides multiples of 8) -> its 8-bit reconstruction."""
        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        y = self.round_trip(x)[0].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
        return Image.fromarray(y)
