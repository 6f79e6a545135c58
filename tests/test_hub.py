"""push_to_hub / from_pretrained through the local Hub server (real huggingface_hub HTTP client code)."""

import torch

from fakeface.hub import load_model, parse_model_spec
from fakeface.publish import push_model_folder
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


def test_a_source_names_the_model_never_a_local_path(tmp_path):
    from fakeface.hub import BUNDLED_MODEL_DIR, ModelSource

    hub = ModelSource("hub", "user/repo", "0123abcd" * 5)
    assert hub.describe() == hub.model_id == "user/repo@" + "0123abcd" * 5  # FAKEFACE_MODEL takes it as is
    bundled = ModelSource("bundled", str(BUNDLED_MODEL_DIR)).describe()
    assert bundled.startswith("fakeface/default_model (bundled, weights sha256 ")
    create_model("efficientnet-lite0", pretrained=False).save_pretrained(tmp_path / "my-model")
    local = ModelSource("local", str((tmp_path / "my-model").resolve())).describe()
    assert local.startswith("local folder my-model (local, weights sha256 ")
    for text in (bundled, local):
        assert str(tmp_path) not in text and str(BUNDLED_MODEL_DIR) not in text and "/work" not in text


def test_a_model_that_cannot_be_had_says_why_in_one_line(hub_endpoint, tmp_path):
    import pytest

    from fakeface.hub import ModelUnavailable

    model = create_model("efficientnet-lite0", pretrained=False)
    model.save_pretrained(tmp_path)
    push_model_folder(tmp_path, "tester/lite0-reasons", include_backbone=False)
    for spec, words in (("tester/no-such-model", "was not found on"),
                        ("tester/lite0-reasons@no-such-branch", "has no revision no-such-branch"),
                        ("/no/such/folder", "neither a model folder nor a valid Hub repo id")):
        with pytest.raises(ModelUnavailable) as caught:
            load_model(spec)
        assert words in caught.value.reason and "\n" not in caught.value.reason and "\n" not in str(caught.value)


def test_push_model_folder_is_one_commit_with_the_backbone_and_its_sha256(hub_endpoint, clip_backbone, tmp_path,
                                                                       monkeypatch):
    """What `train --push-to-hub` does: weights, config pinning the backbone, and the backbone, in one commit."""
    import json

    from huggingface_hub import HfApi, hf_hub_download

    from fakeface.clip_backbone import ONNX_FILENAME, file_sha256

    backbone = clip_backbone
    commits = []
    original = HfApi.create_commit
    monkeypatch.setattr(HfApi, "create_commit", lambda self, *a, **k: commits.append(a[0]) or original(self, *a, **k))
    create_model("clip-vit-b16-probe", pretrained=False).save_pretrained(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not for the Hub")
    commit = push_model_folder(tmp_path, "tester/clip-push")
    assert commits == ["tester/clip-push"] and HfApi().model_info("tester/clip-push").sha == commit
    files = set(HfApi().list_repo_files("tester/clip-push", revision=commit))
    assert {"model.safetensors", "config.json", ONNX_FILENAME} <= files and "checkpoint.pt" not in files
    config = json.loads(open(hf_hub_download("tester/clip-push", "config.json", revision=commit)).read())
    assert config["backbone_sha256"] == file_sha256(backbone)
