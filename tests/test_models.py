import json

import numpy as np
import pytest
import torch

from fakeface.errors import FakefaceError
from fakeface.models import ARCHITECTURES, FakeFaceModel, arch_spec, create_model


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_save_then_load_gives_identical_outputs(arch, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch, pretrained=False).eval()
    model.set_calibration(temperature=1.7, threshold=0.42)
    if model.family == "features":
        x = torch.randn(3, model.recipe.dim)
    else:
        x = torch.randn(2, 3, 64, 64)
    model.save_pretrained(tmp_path)
    loaded = FakeFaceModel.from_pretrained(str(tmp_path))
    assert torch.equal(model(x), loaded(x))
    config = json.loads((tmp_path / "config.json").read_text())
    spec = arch_spec(arch)
    assert config["arch"] == arch and config["input_size"] == spec.input_size
    assert config["mean"] == list(spec.mean) and config["labels"] == ["fake", "real"]
    assert (config["temperature"], config["threshold"]) == (1.7, 0.42)
    assert (loaded.temperature, loaded.threshold) == (1.7, 0.42)
    assert not list(tmp_path.glob("*.bin")) and (tmp_path / "model.safetensors").exists()


def test_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"arch": "efficientnet-lite0"}))
    with pytest.raises(FakefaceError, match="model.safetensors"):
        FakeFaceModel.from_pretrained(str(tmp_path))


def test_unknown_architecture_names_the_choices():
    with pytest.raises(FakefaceError, match="resnet50-attention"):
        create_model("vgg-nonexistent")


def test_resnet_imagenet_weights_unreachable_gives_clear_advice(monkeypatch):
    from torchvision.models import ResNet50_Weights

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V2), "get_state_dict", offline)
    with pytest.raises(FakefaceError, match="--no-pretrained"):
        create_model("resnet50-attention", pretrained=True)


def test_lite0_loads_the_offline_imagenet_weights():
    scratch = create_model("efficientnet-lite0", pretrained=False)
    pretrained = create_model("efficientnet-lite0", pretrained=True)
    w = "net.backbone.net._conv_stem.weight"
    assert not torch.equal(scratch.state_dict()[w], pretrained.state_dict()[w])
    assert np.isfinite(pretrained.state_dict()[w].numpy()).all()


def _with_early_exit(temperature=0.8, band=(0.2, 0.8)):
    torch.manual_seed(0)
    model = create_model("clip-vit-b16-probe", features={"views": [[224, 1], [448, 2]], "layers": [11],
                                                         "tokens": ["cls"]}).eval()
    model.set_calibration(temperature=1.5, threshold=0.4)
    fast = create_model("clip-vit-b16-probe", features={"views": [[224, 1]], "layers": [11], "tokens": ["cls"]})
    model.attach_early_exit(fast.net, temperature, band)
    return model


def test_early_exit_rows_carry_the_fast_probes_calibrated_probability(tmp_path):
    model = _with_early_exit()
    x = torch.randn(64, model.recipe.dim) * 3
    with torch.no_grad():
        fast = model.fast_logits(x[:, : model.fast_dim])
        out = model(x)
        exits = model.exits(fast)
        p_out = torch.sigmoid(out / model.temperature)
        assert exits.any() and (~exits).any()  # both routes are exercised
        assert torch.allclose(p_out[exits], torch.sigmoid(fast / 0.8)[exits], atol=1e-6)
        assert torch.equal(out[~exits], model.net(x)[~exits])
    model.save_pretrained(tmp_path)
    loaded = FakeFaceModel.from_pretrained(str(tmp_path))
    assert loaded.early_exit == {"groups": 1, "band": [0.2, 0.8], "temperature": 0.8}
    with torch.no_grad():
        assert torch.equal(loaded(x), out)


def test_early_exit_needs_several_view_groups():
    model = create_model("clip-vit-b16-probe", features={"views": [[224, 1]], "layers": [11], "tokens": ["cls"]})
    with pytest.raises(FakefaceError, match="two view groups"):
        model.attach_early_exit(model.net, 1.0, (0.1, 0.9))
