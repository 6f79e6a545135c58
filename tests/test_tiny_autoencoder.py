"""fakeface.tiny_autoencoder with random weights: latent shapes per variant, the round trip keeps the image's
size and range, and upstream .pth state dicts convert to safetensors and load back unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface.errors import FakefaceError
from fakeface.tiny_autoencoder import VARIANTS, TinyAutoencoder


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_latent_shape_and_round_trip(variant):
    torch.manual_seed(0)
    model = TinyAutoencoder(variant).eval()
    x = torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        z = model.encoder(x)
    assert z.shape == (2, VARIANTS[variant][0], 3, 5)
    y = model.round_trip(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1


def test_flux2_blocks_next_to_latents_have_the_pooled_group_norm():
    keys = TinyAutoencoder("taef2").encoder.state_dict().keys()
    pooled = {k.split(".")[0] for k in keys if ".pool." in k}
    assert pooled == {"11", "12", "13"}  # the last stage before the latent convolution
    assert not any(".pool." in k for k in TinyAutoencoder("taef1").state_dict())


def test_pth_converts_to_safetensors_and_loads_back(tmp_path):
    torch.manual_seed(1)
    source = TinyAutoencoder("taesd")
    torch.save(source.encoder.state_dict(), tmp_path / "taesd_encoder.pth")
    torch.save(source.decoder.state_dict(), tmp_path / "taesd_decoder.pth")
    loaded = TinyAutoencoder.load("taesd", pth_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["taesd_decoder.safetensors",
                                                                      "taesd_encoder.safetensors"]
    for (k, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    # the cache is read next time, without the .pth files
    (tmp_path / "taesd_encoder.pth").unlink()
    again = TinyAutoencoder.load("taesd", pth_dir=tmp_path, cache_dir=tmp_path / "cache")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    assert again.round_trip_pil(image).size == (24, 16)
    assert np.array_equal(np.asarray(again.round_trip_pil(image)), np.asarray(loaded.round_trip_pil(image)))


def test_clear_errors(tmp_path):
    with pytest.raises(FakefaceError, match="unknown tiny autoencoder"):
        TinyAutoencoder("vae")
    with pytest.raises(FakefaceError, match="no weights for taef1 encoder"):
        TinyAutoencoder.load("taef1", pth_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(FakefaceError, match="multiple of 8"):
        TinyAutoencoder("taesd").round_trip(torch.rand(1, 3, 20, 16))
