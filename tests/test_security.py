"""Security checks: no unsafe calls in the project's source, tokens only from the environment and never printed
or logged, and no request can choose the model (a model id or path sent by a client is never honoured)."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import uuid
from pathlib import Path

import httpx
import pytest

from fakeface.space import rest
from test_app import FACE, photo_bytes, running_app, tiny_predictor

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

    from fakeface.publish import push_model_folder
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
    image = FACE.read_bytes()  # a face, so every route answers with probabilities
    plain = httpx.post(f"{url}{rest.REST_PATH}", files={"file": ("a.png", image)}, timeout=60).json()
    sneaky = httpx.post(f"{url}{rest.REST_PATH}", files={"file": ("a.png", image)}, timeout=60,
                        data={"model": "attacker/evil-model", "model_path": "/etc/passwd", "revision": "main"}).json()
    sneaky_query = httpx.post(f"{url}{rest.REST_PATH}?model=attacker/evil-model", files={"file": ("a.png", image)},
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
    body = schema["paths"][rest.REST_PATH]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
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


# ------------------------------------------------------------------------ files a client may name (issue 16)


def _upload_folder() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def _upload(url: str, name: str, data: bytes) -> str:
    (path,) = httpx.post(f"{url}/gradio_api/upload", files={"files": (name, data)}, timeout=30).json()
    return path


def _file(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def call(url: str, api: str, data: list, session: str | None = None) -> tuple[str, object]:
    """(event, data) of a raw-HTTP Gradio call: POST /gradio_api/call/<api>, then read its event stream."""
    body = {"data": data, **({"session_hash": session} if session else {})}
    r = httpx.post(f"{url}/gradio_api/call/{api}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    stream = httpx.get(f"{url}/gradio_api/call/{api}/{r.json()['event_id']}", timeout=120).text
    event = payload = None
    for line in stream.splitlines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event in ("complete", "error"):
            payload = json.loads(line.removeprefix("data: "))
    return event, payload


def _refused(answer) -> bool:
    """One message for any path (whether it exists or not), or the one for URLs (which are never fetched)."""
    from fakeface.space.uploads import NO_URLS, UPLOAD_AGAIN

    event, payload = answer
    message = payload.get("error") if isinstance(payload, dict) else payload
    return event == "error" and message in (UPLOAD_AGAIN, NO_URLS)


@pytest.fixture
def secret(tmp_path) -> Path:
    """An image outside the upload folder (classifiable if opened), its access time set far back."""
    path = tmp_path / "secret" / "photo.png"
    path.parent.mkdir()
    path.write_bytes(photo_bytes(seed=3))
    os.utime(path, (946684800, path.stat().st_mtime))  # atime 2000-01-01, before mtime: any read updates it
    return path


@pytest.fixture
def opened(monkeypatch):
    """Every path the server process opens (builtins.open / io.open) and every URL Gradio would download,
    while the test runs."""
    import builtins
    import io as io_module

    import gradio.processing_utils as pu

    seen: list[str] = []
    real_open = builtins.open

    def spying_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)):
            seen.append(os.path.realpath(file))
        return real_open(file, *args, **kwargs)

    def no_download(url, *args, **kwargs):
        seen.append(str(url))
        raise AssertionError(f"the server tried to download {url}")

    monkeypatch.setattr(builtins, "open", spying_open)
    monkeypatch.setattr(io_module, "open", spying_open)
    monkeypatch.setattr(pu, "async_ssrf_protected_download", no_download)
    monkeypatch.setattr(pu, "save_url_to_cache", no_download)
    return seen


def _not_touched(path: Path, opened: list[str]) -> bool:
    return str(path.resolve()) not in opened and path.stat().st_atime == 946684800


def _named_paths(secret: Path, url: str) -> dict[str, str]:
    """Ways to name `secret` (outside the upload folder) or another server resource, by kind."""
    uploads = _upload_folder()
    link_dir = uploads / f"link-{uuid.uuid4().hex}"
    link_dir.mkdir()
    (link_dir / "photo.png").symlink_to(secret)  # a link planted in the upload folder, pointing outside it
    return {
        "absolute": str(secret),
        "dot-dot": str(uploads / os.path.relpath(secret, uploads)),  # starts in the upload folder, climbs out
        "symlink": str(link_dir / "photo.png"),
        "url": f"{url}/gradio_api/file={secret}",
        "public-url": "https://example.com/photo.png",
        "relative": "photo.png",
    }


@pytest.mark.parametrize("api", ["predict", "analyse", "predict_batch"])
def test_events_refuse_paths_they_were_not_given(served, secret, opened, api):
    _, url = served
    names = _named_paths(secret, url)
    missing = str(_upload_folder() / uuid.uuid4().hex / "gone.png")
    for kind, path in {**names, "missing": missing}.items():
        for payload in (_file(path), {"path": path}, path):  # FileData, without its meta, a bare string
            data = [[payload], None] if api == "predict_batch" else [payload, None]
            answer = call(url, api, data, session=uuid.uuid4().hex)
            assert _refused(answer), (kind, payload, answer)  # one message, whether the file exists or not
    assert _not_touched(secret, opened), [p for p in opened if "secret" in p or "://" in p]
    assert not [p for p in opened if "://" in p]


def test_normal_upload_still_works_over_raw_http(served):
    _, url = served
    path = _upload(url, "mine.jpg", FACE.read_bytes())
    event, data = call(url, "predict", [_file(path), 0.5], session="raw-client")
    assert event == "complete" and data[0]["label"] in ("REAL", "UNCERTAIN", "FAKE")
    assert not Path(path).exists()  # the request that used the upload deleted it
    path = _upload(url, "mine.jpg", FACE.read_bytes())
    event, data = call(url, "analyse", [_file(path), 0.5], session="raw-client")
    assert event == "complete" and "Fake probability" in data[2] and data[3]["value"] is not None
    assert call(url, "analyse", [_file(path), 0.3], session="raw-client")[0] == "complete"  # again: same session


def test_another_sessions_upload_is_refused_and_kept(served, opened):
    _, url = served
    image = photo_bytes(seed=12)
    path = _upload(url, "theirs.png", image)
    assert call(url, "analyse", [_file(path), 0.5], session="owner")[0] == "complete"
    del opened[:]
    for api, data in (("analyse", [_file(path), 0.5]), ("predict", [_file(path), 0.5]),
                      ("predict_batch", [[_file(path)], 0.5])):
        assert _refused(call(url, api, data, session="intruder")), api
    assert Path(path).is_file()  # the intruder's /predict did not get it deleted
    assert os.path.realpath(path) not in opened  # nor read
    assert call(url, "predict", [_file(path), 0.5], session="owner")[0] == "complete"  # the owner can, once
    assert not Path(path).exists()


def test_upload_used_by_its_request_not_released_by_naming_it(served):
    """An upload not yet used belongs to whoever uses it first; once used and released it is gone for all."""
    _, url = served
    path = _upload(url, "once.png", photo_bytes(seed=13))
    assert call(url, "predict", [_file(path), 0.5], session="first")[0] == "complete"
    assert _refused(call(url, "predict", [_file(path), 0.5], session="first"))  # released: not named back
    assert _refused(call(url, "predict", [_file(path), 0.5], session="second"))


def test_gradio_client_cannot_name_server_paths(served, secret, opened):
    from gradio_client import Client, handle_file

    _, url = served
    names = _named_paths(secret, url)
    client = Client(url, verbose=False)
    for kind in ("absolute", "dot-dot", "symlink"):
        with pytest.raises(Exception, match="upload the image again"):  # sent as is: not uploaded by the client
            client.predict({"path": names[kind]}, api_name="/predict")
        with pytest.raises(Exception, match="upload the image again"):
            client.predict({"path": names[kind]}, api_name="/analyse")
    # A URL is passed on for the server to fetch; it never does, and says so (not "upload again").
    with pytest.raises(Exception, match="does not fetch images from URLs"):
        client.predict(handle_file(names["url"]), api_name="/predict")
    with pytest.raises(Exception, match="does not fetch images from URLs"):
        client.predict([handle_file(names["public-url"])], api_name="/predict_batch")
    assert _not_touched(secret, opened)
    assert not [p for p in opened if "://" in p]


def test_gradio_client_cannot_use_another_clients_upload(served, tmp_path):
    from gradio_client import Client, handle_file

    _, url = served
    owner, intruder = Client(url, verbose=False), Client(url, verbose=False)
    photo = tmp_path / "owned.png"
    photo.write_bytes(photo_bytes(seed=14))
    job = owner.submit(handle_file(str(photo)), api_name="/analyse")
    job.result(timeout=120)
    (path,) = [p for p in _upload_folder().glob("*/owned.png")]
    with pytest.raises(Exception, match="upload the image again"):
        intruder.predict({"path": str(path)}, api_name="/predict")
    assert path.is_file()
    assert owner.predict(handle_file(str(photo)), api_name="/predict")["label"] in ("REAL", "UNCERTAIN", "FAKE", "NO FACE")


def test_checked_path_resolves_before_deciding(tmp_path):
    from fakeface.space.uploads import UploadRefused, checked_path

    root = tmp_path / "uploads"
    (root / "a").mkdir(parents=True)
    inside = root / "a" / "x.png"
    inside.write_bytes(b"x")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    (root / "a" / "link.png").symlink_to(outside)
    (root / "a" / "inner.png").symlink_to(inside)
    assert checked_path(str(inside), root) == str(inside.resolve())
    assert checked_path(str(root / "a" / "inner.png"), root) == str(inside.resolve())  # a link that stays inside
    assert checked_path(str(outside), root, keep=[outside]) == str(outside.resolve())  # the app's own files
    for bad in (str(outside), str(root / "a" / "link.png"), str(root / ".." / "outside.png"), str(root),
                "a/x.png", "http://x/y.png", "file:///etc/hostname", "", None, 3, ["x"], str(inside) + "\0"):
        with pytest.raises(UploadRefused):
            checked_path(bad, root)
    with pytest.raises(UploadRefused, match="does not fetch images from URLs"):
        checked_path("https://example.com/photo.jpg", root)


def test_tracker_binds_uploads_to_the_session_that_uses_them(tmp_path):
    from fakeface.space.uploads import UploadRefused, UploadTracker

    root = tmp_path / "uploads"
    (root / "h").mkdir(parents=True)
    shared = root / "h" / "a.png"
    shared.write_bytes(b"x")
    tracker = UploadTracker()
    with pytest.raises(UploadRefused):  # never handed out: nobody may name it
        tracker.admit(str(shared), "a", root)
    tracker.claim([str(shared), str(shared)])  # two clients upload the same photo
    tracker.admit(str(shared), "page-a", root)
    tracker.admit(str(shared), "page-a", root)  # the page again (threshold moved): takes no second upload
    tracker.admit(str(shared), "api-b", root, releasing=True)
    with pytest.raises(UploadRefused):
        tracker.admit(str(shared), "c", root)
    tracker.release([shared], root, session="c")  # c holds nothing: nothing given back, nothing deleted
    assert shared.exists() and tracker.pending(shared) == 2
    tracker.release([shared], root, session="api-b")
    assert shared.exists() and tracker.pending(shared) == 1  # page-a still has it
    tracker.release([shared], root, session="page-a")
    assert not shared.exists()


def test_batch_zip_entries_cannot_escape_over_http(served, tmp_path):
    import io as io_module
    import zipfile

    _, url = served
    marker = f"escaped-{uuid.uuid4().hex[:8]}"
    buf = io_module.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in (f"../../{marker}.png", f"/{marker}.png", f"ok/../../{marker}.png", "good.png"):
            zf.writestr(name, photo_bytes())
    path = _upload(url, "evil.zip", buf.getvalue())
    event, (table, _, summary) = call(url, "predict_batch", [[_file(path)], 0.5], session="zipper")
    assert event == "complete"
    rows = {row[0]: row for row in table["data"]}
    assert rows["evil.zip/good.png"][3] in ("REAL", "UNCERTAIN", "FAKE", "NO FACE")
    assert sum(1 for row in rows.values() if row[3] == "error" and "skipped" in row[4]) == 3
    uploads = _upload_folder()
    for folder in (uploads, uploads.parent, tmp_path, Path.cwd()):
        assert not list(folder.rglob(f"{marker}*")), folder
    assert not Path(path).exists()
