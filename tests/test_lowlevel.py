"""fakeface.lowlevel on tiny generated crops: the NPR residual, training tiles, a short training run that
learns a 2x-upsampling trace, deterministic scoring, safetensors save/load and the serving call."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface import lowlevel
from fakeface.errors import FakefaceError


def _noise(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _upsampled(h, w, seed):
    """A "generated" crop: noise at half size, 2x nearest-upsampled (its NPR residual is zero)."""
    return np.repeat(np.repeat(_noise(h // 2, w // 2, seed), 2, axis=0), 2, axis=1)


def test_npr_residual_is_zero_on_a_nearest_upsampled_image_only():
    up = lowlevel.to_tensor(_upsampled(8, 12, 0))[None]
    assert torch.count_nonzero(lowlevel.npr_residual(up)) == 0
    assert torch.count_nonzero(lowlevel.npr_residual(lowlevel.to_tensor(_noise(8, 12, 0))[None])) > 0


def test_training_tiles_have_the_tile_size_for_small_and_large_crops():
    rng = random.Random(0)
    for shape in ((20, 30), (300, 200), (33, 33)):
        for _ in range(20):
            tile = lowlevel.training_tile(_noise(*shape, 1), rng, tile=32)
            assert tile.shape == (32, 32, 3) and tile.dtype == np.uint8


def test_a_short_training_run_learns_an_upsampling_trace_and_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    crops = [_noise(48, 56, i) for i in range(12)] + [_upsampled(48, 56, 100 + i) for i in range(12)]
    fake = np.array([0] * 12 + [1] * 12)
    model = lowlevel.train(crops, fake, ["s"] * 24, steps=40, batch=8, lr=1e-2, tile=32)
    held_out = [_noise(64, 64, 50 + i) for i in range(6)] + [_upsampled(64, 64, 150 + i) for i in range(6)]
    logits = lowlevel.crop_logits(model, held_out)
    assert logits[6:].min() > logits[:6].max()
    assert np.array_equal(logits, lowlevel.crop_logits(model, held_out))  # deterministic
    path = tmp_path / "lowlevel.safetensors"
    lowlevel.save(model, path)
    again = lowlevel.load(path)
    assert np.allclose(lowlevel.crop_logits(again, held_out), logits, atol=1e-5)
    assert lowlevel.face_logit(again, Image.fromarray(held_out[0])) == pytest.approx(logits[0], abs=1e-5)


def test_clear_errors(tmp_path):
    with pytest.raises(FakefaceError, match="both classes"):
        lowlevel.train([_noise(40, 40, 0)] * 2, np.array([1, 1]), ["s", "s"], steps=1)
    with pytest.raises(FakefaceError, match="too small"):
        lowlevel.face_logit(lowlevel.LowLevelNet(), Image.new("RGB", (1, 9)))
    with pytest.raises(FakefaceError, match="no low-level scorer"):
        lowlevel.load(tmp_path / "missing.safetensors")
