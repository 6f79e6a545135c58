"""Tiny generated face-like data with a learnable cue, shared by the tests."""

from pathlib import Path

import numpy as np
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
