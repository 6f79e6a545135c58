"""Security checks: no unsafe calls in the project's source, tokens only from the environment and never printed
or logged, and no request can choose the model (a model id or path sent by a client is never honoured)."""

from __future__ import annotations

import ast
import logging
import re
import uuid
from pathlib import Path

import httpx
import pytest

from fakeface import serving
from test_app import photo_bytes, running_app, tiny_predictor

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["fakeface", "app.py", "train_space.py", "benchmarks", "scripts"]


# ---------------------------------------------------------------------------------------- source scan


def _dotted(node: ast.AST) -> str:
    """'torch.load' for the expression torch.load; '' when it is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Every call in `source` that could run code from data or a shell: 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        reason = None
        if name == "torch.load" and not _is_true(kwargs.get("weights_only")):
            reason = "torch.load without weights_only=True"
        elif name.split(".")[-1] in ("load", "loads", "Unpickler") and name.split(".")[0] in (
                "pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle"):
            reason = f"{name} (unpickling)"
        elif name in ("eval", "exec", "builtins.eval", "builtins.exec"):  # model.eval() is an attribute: not here
            reason = f"{name}()"
        elif name in ("os.system", "os.popen", "os.execl", "os.execv", "os.spawnl", "commands.getoutput"):
            reason = name
        elif _is_true(kwargs.get("shell")):
            reason = f"{name or 'call'}(shell=True)"
        elif name.endswith("load") and _is_true(kwargs.get("allow_pickle")):
            reason = f"{name}(allow_pickle=True)"
        if reason:
            found.append(f"{filename}:{node.lineno}: {reason}")
    return found


def _project_files() -> list[Path]:
    files = []
    for entry in SOURCES:
        path = ROOT / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    return files


def test_the_scanner_finds_what_it_looks_for():
    bad = """
import os, pickle, subprocess, torch
torch.load("m.pt")
torch.load("m.pt", weights_only=False)
pickle.load(open("x", "rb"))
eval("1 + 1")
exec("x = 1")
os.system("ls")
subprocess.run("ls", shell=True)
np.load("a.npy", allow_pickle=True)
"""
    good = """
torch.load("m.pt", map_location="cpu", weights_only=True)
model.eval()
np.load("a.npy", allow_pickle=False)
subprocess.run(["ls"], check=True)
"""
    assert len(unsafe_calls(bad)) == 8
    assert unsafe_calls(good) == []


def test_project_source_has_no_unsafe_calls():
    files = _project_files()
    assert ROOT / "app.py" in files and any(f.parent.name == "fakeface" for f in files)
    findings = [hit for f in files for hit in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert findings == []


def test_no_token_is_written_in_the_source():
    token = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")  # the shape of a real Hugging Face token
    hits = [str(f.relative_to(ROOT)) for f in _project_files() if token.search(f.read_text(encoding="utf-8"))]
    assert hits == []


# ------------------------------------------------------------------------------------------------ tokens


def test_push_uses_the_env_token_and_never_shows_it(hub_endpoint, tmp_path, monkeypatch, caplog, capfd):
    from huggingface_hub import hf_hub_download

    from fakeface.hub import push_model_folder
    from fakeface.models import create_model

    secret = f"hf_{uuid.uuid4().hex}{uuid.uuid4().hex}"
    monkeypatch.setenv("HF_TOKEN", secret)
    caplog.set_level(logging.DEBUG)  # every logger, at its most talkative
    create_model("efficientnet-lite0", pretrained=False).save_pretrained(str(tmp_path))
    commit = push_model_folder(tmp_path, "tester/token-check", include_backbone=False)
    assert commit
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err
    assert secret not in caplog.text
    assert all(secret not in str(r.args) for r in caplog.records)
    for name in ("config.json", "README.md"):  # nor in what was uploaded
        try:
            text = Path(hf_hub_download("tester/token-check", name, revision=commit)).read_text()
        except Exception:  # noqa: BLE001 - a file the push did not include
            continue
        assert secret not in text


# --------------------------------------------------------------------------------- the model is not chosen


SERVER_SECRET = f"hf_{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(predictor, url) of a server started with a token of its own in HF_TOKEN."""
    predictor = tiny_predictor(tmp_path_factory.mktemp("tiny-model"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", SERVER_SECRET)
        with running_app(predictor) as url:
            yield predictor, url


def test_requests_cannot_choose_the_model(served, monkeypatch, tmp_path):
    from gradio_client import Client, handle_file

    import fakeface.hub
    import fakeface.predictor

    predictor, url = served

    def no_loading(*args, **kwargs):
        raise AssertionError(f"a request made the server load a model: {args} {kwargs}")

    # Whatever a request carries, nothing may load a model while serving it.
    monkeypatch.setattr(fakeface.hub, "load_model", no_loading)
    monkeypatch.setattr(fakeface.predictor, "load_model", no_loading)
    image = photo_bytes()
    plain = httpx.post(f"{url}{serving.REST_PATH}", files={"file": ("a.png", image)}, timeout=60).json()
    sneaky = httpx.post(f"{url}{serving.REST_PATH}", files={"file": ("a.png", image)}, timeout=60,
                        data={"model": "attacker/evil-model", "model_path": "/etc/passwd", "revision": "main"}).json()
    sneaky_query = httpx.post(f"{url}{serving.REST_PATH}?model=attacker/evil-model", files={"file": ("a.png", image)},
                              timeout=60).json()
    for answer in (sneaky, sneaky_query):
        assert answer["model"] == predictor.source.describe() == plain["model"]
        assert answer["fake_prob"] == plain["fake_prob"]

    # No endpoint has a parameter that could name a model, in Gradio's API or in the REST schema.
    client = Client(url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")
    params = {p["parameter_name"] for e in api["named_endpoints"].values() for p in e["parameters"]}
    assert params <= {"image", "threshold", "files"}, params
    schema = httpx.get(f"{url}/api/v1/openapi.json", timeout=30).json()
    body = schema["paths"][serving.REST_PATH]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["properties"]) == {"file", "threshold"}
    path = tmp_path / "a.png"
    path.write_bytes(image)
    label = client.predict(handle_file(str(path)), api_name="/predict")
    assert {c["label"]: c["confidence"] for c in label["confidences"]}["FAKE"] == pytest.approx(plain["fake_prob"],
                                                                                               abs=1e-5)


def test_pages_do_not_show_the_token(served):
    _, url = served
    for route in ("/", "/config", "/gradio_api/info", "/api/v1/openapi.json"):
        assert SERVER_SECRET not in httpx.get(f"{url}{route}", timeout=30).text, route
