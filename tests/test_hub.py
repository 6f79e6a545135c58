"""push_to_hub / from_pretrained through the local Hub server (real huggingface_hub HTTP client code)."""

import torch

from fakeface.hub import load_model, parse_model_spec, push_model_folder
from fakeface.models import FakeFaceModel, create_model


def test_push_then_load_by_hub_id(hub_endpoint, tmp_path):
    torch.manual_seed(0)
    model = create_model("efficientnet-lite0", pretrained=False).eval()
    model.set_calibration(1.3, 0.6)
    model.push_to_hub("tester/lite0-mixin")  # the mixin's own push
    loaded = FakeFaceModel.from_pretrained("tester/lite0-mixin")
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), loaded(x)) and loaded.threshold == 0.6

    model.save_pretrained(tmp_path)
    commit = push_model_folder(tmp_path, "tester/lite0-folder", include_backbone=False)
    again, source = load_model(f"tester/lite0-folder@{commit}")
    assert source.kind == "hub" and source.revision == commit
    assert torch.equal(model(x), again(x))


def test_model_spec_parsing(tmp_path):
    assert parse_model_spec("user/repo@v1") == ("user/repo", "v1")
    assert parse_model_spec("user/repo") == ("user/repo", None)
    assert parse_model_spec(str(tmp_path)) == (str(tmp_path), None)


def test_unreachable_hub_falls_back_to_the_bundled_model(monkeypatch):
    import socket

    from huggingface_hub import constants

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()  # nothing listens there: every Hub call fails to connect, as offline
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("FAKEFACE_MODEL", raising=False)
    model, source = load_model()
    assert source.kind == "bundled" and model.arch == "clip-vit-b16-probe"
