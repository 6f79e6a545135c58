"""Tiny generated face-like data with a learnable cue, shared by the tests."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def cue_image(fake: bool, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Noise with a warm (fake) or cool (real) cast: learnable by every architecture in a few steps."""
    arr = rng.uniform(0, 160, (size, size, 3))
    arr[..., 0 if fake else 2] += 90
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def write_folder(root: Path, n_per_class: int = 12, seed: int = 0, size: int = 64,
                 real_name: str = "real", fake_name: str = "fake") -> Path:
    rng = np.random.default_rng(seed)
    for name, fake in ((real_name, False), (fake_name, True)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            cue_image(fake, rng, size).save(folder / f"{name}_{i:03d}.png")
    return root


class TinyNet(torch.nn.Module):
    """A tiny conv net for 8x8 inputs: each fit on `tiny_set` takes well under a second."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.linear(torch.relu(self.conv(x)).mean((2, 3))).squeeze(1)


def tiny_set(n, seed):
    """(8x8 noise, is_fake) with a learnable cue: fakes are redder."""
    g = torch.Generator().manual_seed(seed)
    fake = (torch.arange(n) % 2).float()
    x = torch.rand(n, 3, 8, 8, generator=g)
    x[:, 0] += fake[:, None, None]
    return torch.utils.data.TensorDataset(x, fake)
