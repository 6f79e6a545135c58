"""The Space: app.py's page and API endpoints over a real server, the REST route over HTTP, and the serving
modules on their own (ui's page logic, batch/zip limits and CSV, the heat-map overlay, the one gate).

A tiny untrained model stands in for the real one: these tests check wiring and contracts, not accuracy.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import stat
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import app
from fakeface.space import batch, rest, serving, ui
from fakeface.errors import FakefaceError
from fakeface.images import MAX_FILE_BYTES
from fakeface.predictor import FaceResult, Prediction, Predictor

from helpers import SigningCertificates, encoded


# ------------------------------------------------------------------------------------------------ fixtures


def tiny_predictor(model_dir: Path) -> Predictor:
    """An untrained EfficientNet-Lite0 saved and loaded like a real model (so the page has a source to show)."""
    from fakeface.models import create_model

    if not (model_dir / "model.safetensors").exists():
        create_model("efficientnet-lite0", pretrained=False).save_pretrained(str(model_dir))
    return Predictor.load(str(model_dir))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


running_app = app.served_in_thread  # (predictor) -> context manager yielding the base URL


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return tiny_predictor(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def tiny_face_predictor(predictor):
    return predictor


@pytest.fixture(scope="module")
def url(predictor):
    with running_app(predictor) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def photo_bytes(fmt: str = "PNG", size: int = 96, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def photo(tmp_path) -> Path:
    """Random pixels: no face in it."""
    path = tmp_path / "photo.png"
    path.write_bytes(photo_bytes())
    return path


FACE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"  # one face (public domain)
HEADLINES = ("REAL", "UNCERTAIN", "FAKE")


# -------------------------------------------------------------------------------------- Gradio endpoints


def test_named_endpoints(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/predict", "/analyse", "/predict_batch"} <= named


def test_predict_returns_label_only(client):
    from gradio_client import handle_file

    result = client.predict(handle_file(str(FACE)), api_name="/predict")
    assert result["label"] in HEADLINES
    confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
    assert set(confidences) == {"REAL", "FAKE"}
    assert confidences["REAL"] + confidences["FAKE"] == pytest.approx(1.0, abs=1e-6)


def test_predict_without_a_face_says_so_and_weighs_nothing(client, photo):
    from gradio_client import handle_file

    result = client.predict(handle_file(str(photo)), api_name="/predict")
    assert result["label"] == "NO FACE" and not result.get("confidences")


def test_predict_threshold_decides_the_label(client):
    from gradio_client import handle_file

    # Any probability is >= 0, so threshold 0 makes everything FAKE, even when REAL is the likelier class.
    assert client.predict(handle_file(str(FACE)), 0.0, api_name="/predict")["label"] == "FAKE"


def test_predict_refuses_a_text_file_with_its_message(client, tmp_path):
    from gradio_client import handle_file

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(text)), api_name="/predict")


def test_predict_refuses_a_threshold_out_of_range(client, photo):
    from gradio_client import handle_file

    with pytest.raises(Exception, match="from 0 to 1"):
        client.predict(handle_file(str(photo)), 1.5, api_name="/predict")


def test_analyse_returns_what_the_page_shows(client, photo):
    from gradio_client import handle_file

    label, scale, summary, heatmap, boxes, faces, panel, fields = client.predict(handle_file(str(FACE)),
                                                                                 api_name="/analyse")
    assert label["label"] in HEADLINES and f">{label['label']}" in scale and "threshold" in scale
    assert "Fake probability" in summary
    # Shown or hidden with the answer, so they come as updates: {"value": file, "visible": ...}
    assert Path(heatmap["value"]).is_file() and Path(boxes["value"]).is_file() and boxes["visible"]
    # Random pixels hold no face: no verdict, no probabilities, no heat map, and the summary says so.
    assert fields["evidence"] == "none" and "strip" in panel  # no metadata: says so, changes nothing
    label, scale, summary, heatmap, boxes, faces, *_ = client.predict(handle_file(str(photo)), api_name="/analyse")
    assert label["label"] == "NO FACE" and "NO FACE FOUND" in scale
    assert summary.startswith("**No verdict.**") and "outside what the model was trained for" in summary
    assert not heatmap["visible"] and not heatmap.get("value") and not boxes.get("value")


def test_predict_batch_two_files_table_and_csv(client, tmp_path):
    from gradio_client import handle_file

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        paths[-1].write_bytes(photo_bytes(seed=i))
    table, csv_path, summary = client.predict([handle_file(str(p)) for p in paths], api_name="/predict_batch")
    assert table["headers"] == batch.BATCH_COLUMNS
    assert [row[0] for row in table["data"]] == ["img0.png", "img1.png"]
    assert all(row[3] == "NO FACE" and row[1] == 0 and row[2] in ("", None) for row in table["data"])
    assert all("no face found" in row[4] for row in table["data"])
    lines = Path(csv_path).read_text().splitlines()
    assert lines[0] == ",".join(batch.CSV_COLUMNS) and len(lines) == 3
    assert summary.startswith("Analysed 2 file(s)")


def test_predict_batch_zip_with_a_bad_entry(client, tmp_path):
    from gradio_client import handle_file

    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.png", photo_bytes())
        zf.writestr("sub/b.jpg", photo_bytes("JPEG", seed=1))
        zf.writestr("readme.txt", "hello")
        zf.writestr("__MACOSX/._a.png", b"junk")
    table, _, summary = client.predict([handle_file(str(archive))], api_name="/predict_batch")
    rows = {row[0]: row for row in table["data"]}
    assert set(rows) == {"batch.zip/a.png", "batch.zip/sub/b.jpg", "batch.zip/readme.txt"}
    assert rows["batch.zip/readme.txt"][3] == "error" and "not an image" in rows["batch.zip/readme.txt"][4]
    assert "1 error" in summary


def test_predict_batch_deletes_uploads_but_keeps_example_files(client, url, tmp_path):
    from gradio.utils import get_upload_folder
    from gradio_client import handle_file

    unique = tmp_path / "delete_me_after_batch.png"
    unique.write_bytes(photo_bytes(seed=7))
    examples = app.example_files()[:1]
    client.predict([handle_file(str(unique))] + [handle_file(p) for p in examples], api_name="/predict_batch")
    assert not list(Path(get_upload_folder()).glob("*/delete_me_after_batch.png"))
    for example in examples:  # the upload shares the cached example's file (same content hash): it must stay
        assert list(Path(get_upload_folder()).glob(f"*/{Path(example).name}"))


def test_page_names_the_model_source(url, predictor):
    config = httpx.get(f"{url}/config", timeout=30).json()
    assert predictor.source.describe() in json.dumps(config)
    assert httpx.get(url, timeout=30).status_code == 200


def test_queue_is_bounded():
    demo = app.build_demo(_FixedPredictor(0.7), serving.new_gate())
    assert demo._queue.max_size == app.QUEUE_MAX_SIZE


def test_python_app_py_starts_offline(predictor, tmp_path):
    """`python app.py` honours GRADIO_SERVER_NAME/PORT and starts with no network (HF_HUB_OFFLINE=1)."""
    import os
    import subprocess
    import sys

    port = _free_port()
    env = {**os.environ, "FAKEFACE_MODEL": predictor.source.location, "HF_HUB_OFFLINE": "1",
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(Path(app.__file__))], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"app.py did not start: {proc.stderr.read().decode()[-2000:] if proc.poll() else 'timeout'}")
        assert predictor.source.describe() in json.dumps(config)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_busy_port_is_one_sentence_naming_the_variable_before_the_model_loads(tmp_path):
    import os
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_NAME": "127.0.0.1",
               "GRADIO_SERVER_PORT": str(port)}
        start = time.monotonic()
        done = subprocess.run([sys.executable, str(Path(app.__file__))], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-2000:]
    assert f"port {port} on 127.0.0.1 is not available" in lines[0] and "GRADIO_SERVER_PORT" in lines[0]
    assert time.monotonic() - start < 30  # said before loading the model (18 s here), not after
    from fakeface.space.startup import StartupError, check_port

    with pytest.raises(StartupError, match="not a port number"):
        check_port("127.0.0.1", "http")


# --------------------------------------------------------------------------------------------- REST route


def _post(url, files=None, data=None):
    return httpx.post(f"{url}{rest.REST_PATH}", files=files, data=data, timeout=60)


def test_rest_good_image(url, predictor):
    r = _post(url, files={"file": ("face.jpg", FACE.read_bytes(), "image/jpeg")})
    assert r.status_code == 200
    body = r.json()
    assert body["filename"] == "face.jpg"
    assert body["verdict"] in ("REAL", "FAKE") and isinstance(body["uncertain"], bool)  # the seed's contract
    assert body["headline"] == ("UNCERTAIN" if body["uncertain"] else body["verdict"])
    assert body["real_prob"] + body["fake_prob"] == pytest.approx(1.0, abs=1e-5)
    assert body["threshold"] == pytest.approx(predictor.threshold)
    assert body["faces_found"] == len(body["faces"]) == 1 and "face_found" not in body
    assert body["model"] == predictor.source.describe()


def test_rest_without_a_face_has_no_verdict(url):
    r = _post(url, files={"file": ("noise.png", photo_bytes(), "image/png")})
    body = r.json()
    assert r.status_code == 200 and body["verdict"] is None and body["faces_found"] == 0 and body["faces"] == []
    assert body["fake_prob"] is None and body["real_prob"] is None and body["headline"] == "NO FACE"
    assert "no verdict" in body["message"] and 0 <= body["whole_image_fake_prob"] <= 1


@pytest.mark.parametrize("threshold, verdict", [("0", "FAKE"), ("1", "REAL")])
def test_rest_threshold_is_honoured(url, threshold, verdict):
    r = _post(url, files={"file": ("face.jpg", FACE.read_bytes(), "image/jpeg")}, data={"threshold": threshold})
    assert r.status_code == 200
    assert r.json()["threshold"] == float(threshold) and r.json()["verdict"] == verdict


def test_rest_openapi_documents_every_status_with_its_body(url):
    spec = httpx.get(f"{url}/api/v1/openapi.json", timeout=30).json()
    responses = spec["paths"][rest.REST_PATH]["post"]["responses"]
    for code in ("200", "400", "413", "415", "422", "429", "503"):
        schema = responses[code]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[-1]
        assert name == ("Answer" if code == "200" else "ErrorAnswer"), code
    answer = spec["components"]["schemas"]["Answer"]["properties"]
    assert {"filename", "verdict", "uncertain", "fake_prob", "real_prob", "faces_found", "message"} <= set(answer)


def test_rest_not_multipart_is_415(url):
    r = httpx.post(f"{url}{rest.REST_PATH}", content=FACE.read_bytes(), headers={"Content-Type": "image/jpeg"},
                   timeout=60)
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]


def test_rest_too_many_at_once_from_one_client_is_429():
    limit = serving.ClientLimit(2)
    assert limit.try_enter("a") and limit.try_enter("a") and not limit.try_enter("a") and limit.try_enter("b")
    limit.leave("a")
    assert limit.try_enter("a")
    assert serving.ClientLimit.client_of({"x-forwarded-for": "1.2.3.4, 10.0.0.1"}, "10.0.0.1") == "1.2.3.4"
    assert serving.ClientLimit.client_of({}, "10.0.0.1") == "10.0.0.1"


@pytest.mark.parametrize("content, status, expected", [
    (b"", 400, "empty file"),
    (b"just some text\n", 415, "not an image"),
    (photo_bytes()[:200], 400, "truncated or corrupt"),
])
def test_rest_bad_files_are_400_or_415(url, content, status, expected):
    r = _post(url, files={"file": ("x.png", content, "application/octet-stream")})
    assert r.status_code == status
    assert expected in r.json()["error"]


def test_rest_missing_file_is_422(url):
    assert _post(url, data={"threshold": "0.5"}).status_code == 422
    assert "file" in _post(url).json()["error"]


@pytest.mark.parametrize("threshold", ["2", "-0.1", "abc", "nan"])
def test_rest_bad_threshold_is_422(url, threshold):
    r = _post(url, files={"file": ("a.png", photo_bytes(), "image/png")}, data={"threshold": threshold})
    assert r.status_code == 422 and "threshold" in r.json()["error"]


def test_rest_too_many_pixels_is_413(url):
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, "PNG")  # 100 MP, yet a tiny file
    r = _post(url, files={"file": ("huge.png", buf.getvalue(), "image/png")})
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_rest_declared_oversize_body_is_413_before_reading(url):
    # Headers only: the server answers from the Content-Length alone, without waiting for the body.
    host, port = url.removeprefix("http://").split(":")
    head = (f"POST {rest.REST_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {MAX_FILE_BYTES + 10**6}\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert b" 413 " in status_line


# ---------------------------------------------------------------------------- page logic without a server


class _FixedPredictor(Predictor):
    """A Predictor whose faces and probabilities are set by the test (no model, no detector)."""

    def __init__(self, *probs: float, face_found: bool = True):
        from fakeface.models import create_model

        super().__init__(create_model("efficientnet-lite0", pretrained=False), detector="none")
        self.probs, self.face_found = probs, face_found

    def predict_image(self, image, threshold=None, heatmap=False):
        faces = [FaceResult(p, (0, 0, 10, 10), image, np.linspace(-1, 1, 16).reshape(4, 4)) for p in self.probs]
        return Prediction(max(self.probs), self.threshold if threshold is None else threshold,
                          self.model.uncertain_band, faces, self.face_found)


def test_analyse_several_faces_gives_a_verdict_per_face(photo):
    pred = _FixedPredictor(0.1, 0.9, 0.55)
    label, scale, summary, heat, boxes, gallery, _, _, kept = ui.analyse(pred, str(photo), 0.5)
    assert label["label"] == "FAKE" and ">FAKE<" in scale
    assert "3 faces found" in summary and "face 2" in summary
    captions = [caption for _, caption in gallery["value"]]
    assert captions[0].startswith("Face 1: REAL") and captions[1].startswith("Face 2: FAKE")
    assert captions[2].startswith("Face 3: UNCERTAIN")
    assert gallery["visible"] and heat["value"].size == (384, 384) and "face 2" in heat["label"]
    assert boxes["visible"] and boxes["value"].size == Image.open(photo).size


def test_faces_are_numbered_left_to_right(tiny_face_predictor):
    """The gallery's and the boxes' order: the left-hand face is face 1 (the detector lists the larger first)."""
    *_, kept = ui.analyse(tiny_face_predictor, str(FACE.parent / "two_faces.jpg"), 0.5)
    lefts = [face.box[0] for face in kept.prediction.faces]
    assert len(lefts) == 2 and lefts == sorted(lefts)


def test_analyse_uncertain_band_is_said(photo):
    label, scale, summary, *_ = ui.analyse(_FixedPredictor(0.45), str(photo), 0.5)
    assert label["label"] == "UNCERTAIN" and "UNCERTAIN (leans REAL)" in scale
    assert summary.startswith("**Uncertain (leans REAL).**")


def test_a_new_threshold_rereads_the_kept_scores_without_the_model(photo):
    predictor = _CountingPredictor(seconds=0)
    predictor.face_found = True
    *_, kept = ui.analyse(predictor, str(photo), 0.5)
    for threshold, headline in ((0.9, "REAL"), (0.65, "UNCERTAIN"), (0.2, "FAKE")):
        label, scale, summary, *_ = ui.Events.rethreshold(kept, threshold)
        assert label["label"] == headline and f"threshold {threshold:.2f}" in scale
    assert predictor.calls == 1


def test_analyse_bad_file_gives_a_message_not_a_traceback(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.warns(UserWarning):  # gr.Warning outside a request falls back to warnings.warn
        label, scale, summary, heat, boxes, gallery, panel, fields, kept = ui.analyse(_FixedPredictor(0.5),
                                                                                     str(bad), 0.5)
    assert label is None and heat["value"] is None and kept is None and fields is None and panel == ""
    assert summary.startswith("**Could not analyse this image.** broken.jpg:")
    assert str(tmp_path) not in summary  # the server path is not shown


def test_verdict_label_headline_follows_the_threshold():
    from fakeface.space.components import VerdictLabel

    out = VerdictLabel().postprocess(ui.label_value(Prediction(0.4, 0.2, 0.1)))
    assert out.label == "FAKE" and [c.label for c in out.confidences] == ["REAL", "FAKE"]
    assert VerdictLabel().postprocess({"REAL": 0.7, "FAKE": 0.3}).label == "REAL"  # plain use unchanged


def test_payload_path_reads_the_raw_payload():
    from fakeface.space.uploads import payload_path

    assert payload_path({"path": "/tmp/gradio/abc/x.txt", "orig_name": "x.txt"}) == "/tmp/gradio/abc/x.txt"
    assert payload_path("/tmp/gradio/abc/x.txt") == "/tmp/gradio/abc/x.txt"  # direct calls
    assert payload_path(None) is None and payload_path({"path": 3}) is None


def test_component_subclasses_only_in_components_and_their_stub_ignored():
    # Gradio writes a .pyi stub beside any module that subclasses a component: only fakeface/space/components.py may,
    # and its stub is git-ignored.
    import subprocess

    import gradio as gr

    from fakeface.space import components, guard

    for module in (app, ui, guard):
        assert not [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, gr.components.Component)
                    and v.__module__ == module.__name__], module
    assert components.VerdictLabel().get_block_name() == "label"  # drawn by gr.Label's frontend, not a custom one
    stub = Path(components.__file__).with_suffix(".pyi")
    root = Path(app.__file__).parent
    if (root / ".git").exists() and stub.exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", str(stub)], cwd=root)
        assert ignored.returncode == 0, f"{stub} is not git-ignored"


def test_example_files_lists_images(monkeypatch, tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(app, "EXAMPLES_DIR", tmp_path)
    assert [Path(p).name for p in app.example_files()] == ["a.JPG", "b.png"]


# ------------------------------------------------------------------------------------- batch/zip helpers


def _zip(path: Path, entries: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_zip_entries_cannot_escape(tmp_path):
    archive = _zip(tmp_path / "evil.zip", {"../../etc/x.png": b"a", "/abs.png": b"b", "ok/../../up.png": b"c",
                                            "C:\\win.png": b"d", "good.png": photo_bytes()})
    link = zipfile.ZipInfo("link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(link, "/etc/passwd")
    items = {i.name: i for i in batch.read_batch([archive])}
    assert items["evil.zip/good.png"].data == photo_bytes()
    reasons = {name: item.error for name, item in items.items() if item.error}
    assert len(reasons) == 5
    assert "symbolic link" in reasons["evil.zip/link.png"] and "absolute" in reasons["evil.zip//abs.png"]
    assert all(item.data is None for item in items.values() if item.error)
    assert list(tmp_path.iterdir()) == [archive]  # nothing was written anywhere


def test_zip_bomb_refused_by_declared_size(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "MAX_BATCH_BYTES", 1000)
    archive = _zip(tmp_path / "bomb.zip", {f"{i}.png": b"\0" * 600 for i in range(2)})  # 1200 bytes declared
    with pytest.raises(FakefaceError, match="uncompressed"):
        batch.read_batch([archive])


def test_zip_entry_inflating_past_its_declared_size_is_refused(tmp_path):
    archive = _zip(tmp_path / "liar.zip", {"a.png": b"\0" * 100_000})
    raw = bytearray(archive.read_bytes())
    # Patch the declared uncompressed size (local header offset 22, central directory offset 24) to 1000.
    raw[22:26] = (1000).to_bytes(4, "little")
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24:central + 28] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    (item,) = batch.read_batch([archive])
    assert item.data is None and item.error  # never more than the declared 1000 bytes are kept


def test_batch_count_limit(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"{i}.png": b"x" for i in range(batch.MAX_BATCH_FILES + 1)})
    with pytest.raises(FakefaceError, match=str(batch.MAX_BATCH_FILES)):
        batch.read_batch([archive])


def test_batch_reports_unreadable_files_per_row(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    not_zip = tmp_path / "fake.zip"
    not_zip.write_text("no")
    items = batch.read_batch([empty, not_zip, tmp_path / "gone.png"])
    assert [bool(i.error) for i in items] == [True, True, True]
    assert "empty file" in items[0].error and "zip" in items[1].error and "no longer" in items[2].error


def test_csv_cells_cannot_become_formulas(tmp_path):
    path = batch.write_csv([{"file": "=HYPERLINK(1)", "faces": 1, "fake_prob": 0.5, "verdict": "FAKE",
                               "note": ""}])
    assert path.read_text().splitlines()[1].startswith("'=HYPERLINK")
    path.unlink()


def test_delete_uploads_only_inside_the_upload_root(tmp_path):
    root, outside = tmp_path / "uploads", tmp_path / "keep.png"
    (root / "abc").mkdir(parents=True)
    inside = root / "abc" / "a.png"
    inside.write_bytes(b"x")
    outside.write_bytes(b"x")
    from fakeface.space.uploads import delete_uploads

    delete_uploads([inside, outside], root)
    assert not inside.exists() and not inside.parent.exists() and outside.exists()


def test_heatmap_overlay_colours_by_sign():
    crop = Image.new("RGB", (64, 64), (128, 128, 128))
    heat = np.zeros((8, 8), np.float32)
    heat[:, :4], heat[:, 4:] = -1.0, 1.0
    out = np.asarray(ui.heatmap_overlay(crop, heat, side=128))
    assert out.shape == (128, 128, 3)
    left, right = out[64, 4], out[64, 123]
    assert left[2] > left[0] and right[0] > right[2]  # blue towards REAL on the left, red towards FAKE on the right


# ------------------------------------------------------------------------------ one admission gate (issue 12)


class _CountingPredictor(_FixedPredictor):
    """Takes `seconds` per prediction and records how many ran at once, and from where."""

    def __init__(self, seconds: float = 0.4):
        super().__init__(0.7, face_found=False)
        self.seconds, self.lock = seconds, threading.Lock()
        self.now = self.peak = self.calls = 0

    def predict_image(self, image, threshold=None, heatmap=False):
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(self.seconds)
            return super().predict_image(image, threshold, heatmap)
        finally:
            with self.lock:
                self.now -= 1


def test_model_slots_follow_the_machine(monkeypatch):
    monkeypatch.delenv("FAKEFACE_MODEL_SLOTS", raising=False)
    assert [serving.model_slots(n) for n in (1, 2, 3, 4, 8, 64)] == [1, 1, 1, 2, 4, 4]
    monkeypatch.setenv("FAKEFACE_MODEL_SLOTS", "3")
    assert serving.model_slots(2) == 3


def test_one_gate_for_the_page_api_batch_and_rest(monkeypatch):
    """REST requests, /predict and /predict_batch events sent at once never run more model calls together
    than the one gate has slots (here 1, a 2-core machine), and every one of them is answered."""
    from gradio_client import Client

    monkeypatch.setattr(serving, "MODEL_SLOTS", 1)
    predictor = _CountingPredictor()
    with running_app(predictor) as base:
        paths = [httpx.post(f"{base}/gradio_api/upload", files={"files": (f"g{i}.png", photo_bytes(seed=i))},
                            timeout=30).json()[0] for i in range(4)]
        client = Client(base, verbose=False)
        answers = {}

        def rest(i):
            answers[f"rest{i}"] = _post(base, files={"file": (f"r{i}.png", photo_bytes(seed=i))}).status_code

        def gradio(i):
            payload = {"path": paths[i], "meta": {"_type": "gradio.FileData"}}
            api = "/predict_batch" if i == 3 else "/predict"
            answers[f"gradio{i}"] = client.predict([payload] if i == 3 else payload, api_name=api)

        threads = [threading.Thread(target=rest, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=gradio, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert [answers[f"rest{i}"] for i in range(4)] == [200] * 4
    assert all(answers[f"gradio{i}"]["label"] for i in range(3)) and answers["gradio3"][0]["data"]
    assert predictor.calls == 8
    assert predictor.peak == 1  # never two model calls at once, whichever route they came from


def test_faces_in_a_huge_jpeg_are_boxed_in_the_files_pixels(predictor):
    """A JPEG decoded at reduced size (images.DECODE_SCALE) still reports its boxes in its own pixels."""
    from fakeface.images import DECODE_MIN_SIDE

    small = Image.open(FACE.parent / "two_faces.jpg").convert("RGB")
    factor = 2 * DECODE_MIN_SIDE / small.width
    buf = io.BytesIO()
    small.resize((2 * DECODE_MIN_SIDE, round(small.height * factor)), Image.Resampling.BICUBIC).save(buf, "JPEG")
    big = predictor.predict_file(buf.getvalue())
    reference = predictor.predict_image(small)
    assert big.faces_found == reference.faces_found == 2
    for got, want in zip(big.faces, reference.faces):
        assert np.allclose(got.box, np.array(want.box) * factor, atol=0.1 * factor * (want.box[2] - want.box[0]))  # detector noise


# ------------------------------------------------------------------------------------------------ provenance


@pytest.fixture(scope="module")
def provenance_files(tmp_path_factory) -> dict[str, Path]:
    """A JPEG signed with Content Credentials declaring trainedAlgorithmicMedia, a PNG with AUTOMATIC1111's
    parameters chunk, and a plain PNG: files as a user would upload them."""
    folder = tmp_path_factory.mktemp("provenance")
    image = Image.open(io.BytesIO(photo_bytes()))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a face\nSteps: 20, Sampler: Euler a, CFG scale: 7, Model: sd15")
    files = {"signed.jpg": SigningCertificates().sign(encoded(image, "JPEG"), "image/jpeg"),
             "a1111.png": encoded(image, "PNG", pnginfo=info), "plain.png": encoded(image, "PNG")}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def test_rest_answer_has_the_provenance_of_the_uploaded_bytes(url, provenance_files):
    answers = {}
    for name, path in provenance_files.items():
        r = _post(url, files={"file": (name, path.read_bytes())})
        assert r.status_code == 200
        answers[name] = r.json()["provenance"]
    signed = answers["signed.jpg"]
    assert signed["evidence"] == "signed_ai" and signed["content_credentials"]["state"] == "valid"
    assert signed["content_credentials"]["issuer"] == "Fakeface Test Signer"
    assert "not checked against a trust list" in signed["summary"]
    assert answers["a1111.png"]["evidence"] == "unsigned_ai" and "AUTOMATIC1111" in answers["a1111.png"]["summary"]
    assert answers["plain.png"]["evidence"] == "none" and "strip" in answers["plain.png"]["summary"]


def test_batch_table_and_csv_have_provenance(client, provenance_files):
    from gradio_client import handle_file

    paths = [provenance_files[n] for n in ("signed.jpg", "a1111.png", "plain.png")]
    table, csv_path, _ = client.predict([handle_file(str(p)) for p in paths], api_name="/predict_batch")
    column = table["headers"].index("provenance")
    assert [row[column] for row in table["data"]] == [
        "signed: AI-generated", "unsigned: Stable Diffusion web UI (AUTOMATIC1111 format)", "none"]
    rows = list(csv.DictReader(Path(csv_path).open(newline="")))
    assert [r["c2pa"] for r in rows] == ["valid", "absent", "absent"]
    assert rows[0]["c2pa_signer"] == "Fakeface Test Signer" and rows[0]["provenance_evidence"] == "signed_ai"
    assert "AUTOMATIC1111" in rows[1]["generator"] and "strip" in rows[2]["provenance_summary"]


def test_provenance_panel_text(provenance_files):
    from fakeface.provenance import read_provenance

    signed = ui.provenance_markdown(read_provenance(provenance_files["signed.jpg"]))
    assert signed.startswith("**Signed: AI-generated**")
    assert "- Signer: Fakeface Test Signer / Test Signer" in signed and "not checked against a trust list" in signed
    assert "strip" in ui.provenance_markdown(read_provenance(provenance_files["plain.png"]))
    assert ui.provenance_markdown(None) == ""
    # Text from the file is shown literally: no links, HTML or emphasis smuggled in through a prompt.
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "<img src=x onerror=alert(1)> [click](http://x) *bold*\nSteps: 1, Sampler: a")
    text = ui.provenance_markdown(read_provenance(encoded(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)))
    assert "\\<img" in text and "\\[click\\]" in text and "\\*bold\\*" in text and "<img" not in text.replace("\\<", "")


def test_signed_ai_credentials_decide_the_verdict_everywhere(url, client, provenance_files):
    """A low pixel score (0.1) with valid signed Content Credentials declaring AI: FAKE on the page, /analyse,
    /predict, REST and batch alike, the score still shown."""
    from gradio_client import handle_file

    signed = provenance_files["signed.jpg"]
    label, scale, summary, *_, panel, fields, kept = ui.analyse(_FixedPredictor(0.1), str(signed), 0.5)
    assert label["label"] == "FAKE" and label["confidences"]["FAKE"] == pytest.approx(0.1)
    assert ">FAKE<" in scale and "Content Credentials" in scale and "<b>0.10</b>" in scale
    assert summary.startswith("**FAKE: the file's Content Credentials decide.**") and "0.10" in summary
    assert fields["evidence"] == "signed_ai" and "Signed: AI-generated" in panel
    assert ui.Events.rethreshold(kept, 0.05)[0]["label"] == "FAKE"  # any threshold: still decided by them
    rows = batch.predict_batch_rows(_FixedPredictor(0.1), [batch.BatchItem("s.jpg", data=signed.read_bytes())])
    assert rows[0]["verdict"] == "FAKE" and rows[0]["provenance"] == "signed: AI-generated"
    assert "Content Credentials" in rows[0]["note"]
    # Over HTTP with the tiny model: its detector finds no face in these random pixels, so without the
    # credentials there would be no verdict; with them, FAKE from every route.
    body = _post(url, files={"file": ("s.jpg", signed.read_bytes())}).json()
    assert (body["verdict"], body["headline"], body["faces_found"]) == ("FAKE", "FAKE", 0)
    assert body["decided_by"] == "content credentials" and "Content Credentials" in body["message"]
    assert client.predict(handle_file(str(signed)), api_name="/predict")["label"] == "FAKE"
    answer = client.predict(handle_file(str(signed)), api_name="/analyse")
    assert answer[0]["label"] == "FAKE" and answer[7]["content_credentials"]["declares"] == "AI-generated"
    assert "No face found for the model to score" in answer[1] and "NO FACE" not in answer[1]


def test_unsigned_generator_metadata_raises_a_sure_real_to_uncertain(provenance_files):
    label, scale, summary, *_ = ui.analyse(_FixedPredictor(0.1), str(provenance_files["a1111.png"]), 0.5)
    assert label["label"] == "UNCERTAIN" and "UNCERTAIN (leans REAL)" in scale
    assert summary.startswith("**Uncertain (leans REAL).**") and "AUTOMATIC1111" in summary
    label, *_ = ui.analyse(_FixedPredictor(0.9), str(provenance_files["a1111.png"]), 0.5)
    assert label["label"] == "FAKE"  # never lowered
    label, *_ = ui.analyse(_FixedPredictor(0.1), str(provenance_files["plain.png"]), 0.5)
    assert label["label"] == "REAL"  # no metadata: nothing changes
