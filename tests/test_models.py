import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fakeface.errors import FakefaceError
from fakeface.models import ARCHITECTURES, FakeFaceModel, ModelConfig, architecture, create_model


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
    defaults = architecture(arch).default_config()
    assert config["arch"] == arch and config["input_size"] == defaults.input_size
    assert config["mean"] == defaults.mean and config["labels"] == ["fake", "real"]
    assert isinstance(loaded.config, ModelConfig) and loaded.config == model.config
    assert (config["temperature"], config["threshold"]) == (1.7, 0.42)
    assert (loaded.temperature, loaded.threshold) == (1.7, 0.42)
    assert not list(tmp_path.glob("*.bin")) and (tmp_path / "model.safetensors").exists()


def test_config_is_one_dataclass_the_hub_mixin_writes_and_reads(tmp_path):
    """config.json is exactly the ModelConfig's fields; calibration, pin and crop set after init are saved."""
    from dataclasses import asdict

    model = create_model("clip-vit-b16-probe", features={"views": [[224, 1]], "layers": [11], "tokens": ["cls"]})
    model.set_calibration(temperature=1.25, threshold=0.6)
    model.pin_backbone("ab" * 32)
    model.record_crop({"margin": 1.33, "detector": "mtcnn", "max_side": 640})
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved == json.loads(json.dumps(asdict(model.config)))
    assert saved["backbone_file"] == "clip_encoder.int8.onnx" and saved["crop"]["max_side"] == 640
    loaded = FakeFaceModel.from_pretrained(str(tmp_path))
    assert loaded.config == model.config and loaded.threshold == 0.6 and loaded.backbone_sha256 == "ab" * 32


def test_config_json_of_an_earlier_version_still_loads(tmp_path):
    """config.json files written before `backbone_file` and `crop` existed still load; unknown keys are ignored."""
    shipped = Path(__file__).resolve().parents[1] / "fakeface" / "default_model"
    (tmp_path / "model.safetensors").write_bytes((shipped / "model.safetensors").read_bytes())
    config = json.loads((shipped / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("backbone_file", "crop")}
    (tmp_path / "config.json").write_text(json.dumps({**config, "some_future_key": 1}))
    loaded = FakeFaceModel.from_pretrained(str(tmp_path))
    assert loaded.threshold == config["threshold"] and loaded.config.crop is None
    assert loaded.config.backbone_file == "clip_encoder.int8.onnx"


def test_the_earlier_constructor_call_names_its_replacement():
    with pytest.raises(FakefaceError, match="create_model"):
        FakeFaceModel("clip-vit-b16-probe")


def test_registry_defaults_are_fresh_per_model():
    a, b = architecture("clip-vit-b16-probe").default_config(), architecture("clip-vit-b16-probe").default_config()
    a.features["layers"].append(3)
    assert b.features["layers"] == [5, 7, 9, 11]
    with pytest.raises(FakefaceError, match="learning_rate"):
        create_model("efficientnet-lite0", learning_rate=0.1)


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
    assert loaded.early_exit == {"groups": 1, "layers": 1, "band": [0.2, 0.8], "temperature": 0.8}
    assert loaded.exit_block is None  # it reads the first group's every layer: no stop inside the tower
    with torch.no_grad():
        assert torch.equal(loaded(x), out)


def test_early_exit_needs_a_second_view_group_or_fewer_layers():
    model = create_model("clip-vit-b16-probe", features={"views": [[224, 1]], "layers": [11], "tokens": ["cls"]})
    with pytest.raises(FakefaceError, match="second view group or fewer layers"):
        model.attach_early_exit(model.net, 1.0, (0.1, 0.9))


def test_an_early_exit_on_the_first_layers_stops_the_tower_at_the_last_of_them(tmp_path):
    model = create_model("clip-vit-b16-probe", features={"views": [[224, 1]], "layers": [5, 7, 11],
                                                         "tokens": ["cls", "patch_mean"]})
    fast = create_model("clip-vit-b16-probe", features={"views": [[224, 1]], "layers": [5, 7],
                                                        "tokens": ["cls", "patch_mean"]})
    model.attach_early_exit(fast.net, 1.0, (0.1, 0.9), layers=2)
    assert model.exit_block == 7 and model.fast_dim == fast.recipe.dim == 2 * 2 * 768
    assert model.encoder_options() == {"blocks": 12, "split_after": 7, "corners": 0}
    assert fast.encoder_options() == {"blocks": 8, "split_after": None, "corners": 0}  # nothing after 7 is read
    model.save_pretrained(tmp_path)
    assert FakeFaceModel.from_pretrained(str(tmp_path)).exit_block == 7
    with pytest.raises(FakefaceError, match="1 to 3"):
        model.attach_early_exit(fast.net, 1.0, (0.1, 0.9), layers=4)


def test_kind_head_learns_the_kinds_of_training_fakes_and_travels_with_the_weights(tmp_path):
    """pipeline.train_kind_head: the training fakes' families (data.source_family) are its classes, reals and
    pseudo-fakes are left out; the fitted head is saved and loaded with the model."""
    from fakeface.pipeline import PSEUDO_FAKE_SOURCE, FeatureSet, train_kind_head

    model = create_model("clip-vit-b16-probe", features={"views": [[224, 1]], "layers": [11], "tokens": ["cls"]})
    rng = np.random.default_rng(0)
    dim = model.recipe.dim
    centres = {"ciplab": rng.normal(size=dim), "gan-studio": rng.normal(size=dim), "sd21-sdfd": rng.normal(size=dim)}
    sources = ["ciplab"] * 20 + ["gan-studio"] * 20 + ["sd21-sdfd"] * 20 + ["ffhq-real"] * 20 + [PSEUDO_FAKE_SOURCE] * 5
    targets = np.array([1.0] * 60 + [0.0] * 20 + [1.0] * 5, np.float32)
    feats = np.stack([centres.get(s, np.zeros(dim)) + 0.3 * rng.normal(size=dim) for s in sources]).astype(np.float32)
    summary = train_kind_head(model, FeatureSet(feats, targets, sources))
    assert summary == {"kinds": ["GAN", "composite", "diffusion"], "n_fakes": 60}
    probs = model.kind_probabilities(feats[25])  # a gan-studio face
    assert max(probs, key=probs.get) == "GAN" and abs(sum(probs.values()) - 1) < 1e-5
    model.save_pretrained(tmp_path)
    loaded = FakeFaceModel.from_pretrained(str(tmp_path))
    assert loaded.config.kinds == ["GAN", "composite", "diffusion"]
    assert loaded.kind_probabilities(feats[25]) == pytest.approx(probs)
    assert create_model("clip-vit-b16-probe").kind_probabilities(np.zeros(model.recipe.dim)) is None
