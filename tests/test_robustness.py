"""Issue 6, "hard to crash, loses nothing": one generated corpus of good and bad files sent through every way in
(REST, gradio_client /predict and /predict_batch, the CLI), the limits that keep overload prompt and bounded,
and the same answer for the same image on every path (EXIF orientation included).

The model is a tiny untrained EfficientNet-Lite0 whose batch-norm statistics are re-estimated on noise: as
created, its activations vanish and every image gets the same score, which would make the consistency checks
pass whatever the paths did. No face detector runs, so the CLI's `--detector none` sees what the server sees.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import app
from fakeface import cli
from fakeface.errors import FakefaceError
from fakeface.images import MAX_FILE_BYTES, load_image
from fakeface.predictor import FaceResult, Prediction, Predictor
from fakeface.space import batch, rest, serving
from test_app import photo_bytes, running_app
from test_images import bomb_png

TOKEN = uuid.uuid4().hex[:8]  # in every uploaded name, so leftovers are ours and no other run's
TOL = 1e-3

# ------------------------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    error: str | None = None  # a phrase every path's message must hold; None for a valid image
    status: int = 400  # the REST status for a bad file

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def upload_name(self) -> str:
        return f"{TOKEN}-{self.name}"


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def scene(w: int = 96, h: int = 64, seed: int = 3) -> Image.Image:
    """Noise with horizontal stripes, a red block top-left and a dark one bottom-right: turning it changes
    what the model sees (the stripes' edges change orientation), so a missed EXIF rotation shows."""
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    arr[::4] = arr[1::4] = 255
    arr[: h // 3, : w // 3] = (255, 0, 0)
    arr[h * 2 // 3:, w * 2 // 3:] = 0
    return Image.fromarray(arr)


def exif_rotated_jpeg() -> bytes:
    """The scene stored on its side with EXIF Orientation 6 (display = stored turned 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(scene().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)


def upright_twin() -> bytes:
    """The rotated JPEG's own decoded pixels, turned upright by hand and saved losslessly: the model is
    sensitive enough that re-encoding the scene as an upright JPEG would already move p by more than 1e-3."""
    stored = Image.open(io.BytesIO(exif_rotated_jpeg()))
    stored.load()
    return _encode(stored.convert("RGB").transpose(Image.Transpose.ROTATE_270), "PNG")


def _bad_crc_png() -> bytes:
    data = bytearray(_encode(scene(), "PNG"))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    data[idat + 4 + length] ^= 0xFF  # the IDAT checksum only: the pixel data itself is intact
    return bytes(data)


def _deep_png() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 96).astype(np.uint16), (64, 1))
    return _encode(Image.fromarray(ramp), "PNG")


def _palette_png() -> bytes:
    pal = scene().convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return _encode(pal, "PNG", transparency=0)


def _rgba_png() -> bytes:
    rgba = scene().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    return _encode(rgba, "PNG")


def _gif() -> bytes:
    frames = [scene(seed=s).convert("P") for s in (3, 4, 5)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _huge_jpeg() -> bytes:
    # 8000x8000 = 64 MP: under the 80 MP limit. Grayscale and smooth, so it is quick to make and small to send.
    return _encode(Image.linear_gradient("L").resize((8000, 8000)), "JPEG", quality=50)


@functools.lru_cache(maxsize=1)
def corpus() -> dict[str, Case]:
    """Every file of the corpus by name: valid images in every mode, and every kind of bad file."""
    jpeg = _encode(scene(256, 256), "JPEG", quality=90)
    cases = [
        Case("empty.jpg", b"", "empty file"),
        Case("random.jpg", np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "not an image",
             415),
        Case("truncated.jpg", jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        Case("bad_crc.png", _bad_crc_png(), "truncated or corrupt"),
        Case("bomb.png", bomb_png(20000), "image too large", 413),  # 400 MP in ~50 kB
        Case("page.png", b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>", "not an image", 415),
        Case("drawing.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                            b'<rect width="10" height="10" fill="red"/></svg>', "not an image", 415),
        Case("huge.jpg", _huge_jpeg()),
        Case("dot.png", _encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")),
        Case("cmyk.jpg", _encode(scene().convert("CMYK"), "JPEG", quality=95)),
        Case("deep16.png", _deep_png()),
        Case("palette_alpha.png", _palette_png()),
        Case("gray.png", _encode(scene().convert("L"), "PNG")),
        Case("rgba.png", _rgba_png()),
        Case("anim.gif", _gif()),
        Case("photo.webp", _encode(scene(), "WEBP", quality=90)),
        Case("rotated.jpg", exif_rotated_jpeg()),
    ]
    return {case.name: case for case in cases}


# The corpus's names, written out so collecting the tests does not build the corpus (checked below).
CASES = ["empty.jpg", "random.jpg", "truncated.jpg", "bad_crc.png", "bomb.png", "page.png", "drawing.png", "huge.jpg",
         "dot.png", "cmyk.jpg", "deep16.png", "palette_alpha.png", "gray.png", "rgba.png", "anim.gif", "photo.webp",
         "rotated.jpg"]


# ----------------------------------------------------------------------------------------------- fixtures


def sensitive_tiny_model(model_dir: Path) -> Path:
    """An untrained EfficientNet-Lite0 whose score depends on the image (see the module docstring)."""
    from fakeface.models import create_model

    if not (model_dir / "model.safetensors").exists():
        torch.manual_seed(0)
        model = create_model("efficientnet-lite0", pretrained=False)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.momentum = 1.0  # running statistics := those of one noise batch
        model.train()
        with torch.no_grad():
            model(torch.rand(2, 3, 160, 160) * 2 - 1)
        model.eval().save_pretrained(str(model_dir))
    return model_dir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The process works in an empty folder while this module runs: anything written to the CWD shows."""
    folder = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(folder)
    yield folder
    os.chdir(old)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return sensitive_tiny_model(tmp_path_factory.mktemp("sensitive-model"))


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor.load(str(model_dir), detector="none")


@pytest.fixture(scope="module")
def url(predictor, workdir):
    with running_app(predictor) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The corpus on disk, under the names it is uploaded with."""
    folder = tmp_path_factory.mktemp("corpus")
    out = {}
    for case in corpus().values():
        out[case.name] = folder / case.upload_name
        out[case.name].write_bytes(case.data)
    return out


@pytest.fixture(scope="module")
def reference(predictor) -> dict[str, float]:
    """fake_prob of each valid file straight from the Predictor: what every path must answer."""
    return {c.name: predictor.predict_file(c.data).fake_prob for c in corpus().values() if c.ok}


def _upload_folder() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def _left_in_uploads(name: str) -> list[Path]:
    return list(_upload_folder().glob(f"*/{name}"))


def _rest(url: str, name: str, data: bytes, **form) -> httpx.Response:
    return httpx.post(f"{url}{rest.REST_PATH}", files={"file": (name, data, "application/octet-stream")},
                      data=form or None, timeout=120)


GOOD = photo_bytes()


# ------------------------------------------------------------------------------------- corpus, every path


def test_corpus_names():
    assert list(corpus()) == CASES


@pytest.mark.parametrize("name", CASES)
def test_rest_corpus(url, reference, name):
    case = corpus()[name]
    r = _rest(url, case.upload_name, case.data)
    body = r.json()
    if case.ok:
        assert r.status_code == 200, body
        assert body["fake_prob"] == pytest.approx(reference[name], abs=TOL)
        assert body["verdict"] in ("REAL", "FAKE")
    else:
        assert r.status_code == case.status, body
        assert case.error in body["error"] and body["filename"] == case.upload_name
        assert _rest(url, "next.png", GOOD).status_code == 200  # the server is still up and answering


@pytest.mark.parametrize("name", CASES)
def test_gradio_predict_corpus(client, files, reference, name):
    from gradio_client import handle_file

    case = corpus()[name]
    if case.ok:
        result = client.predict(handle_file(str(files[name])), api_name="/predict")
        confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
        assert confidences["FAKE"] == pytest.approx(reference[name], abs=TOL)
    else:
        with pytest.raises(Exception, match=re.escape(case.error)):
            client.predict(handle_file(str(files[name])), api_name="/predict")
    assert not _left_in_uploads(case.upload_name)  # the upload was deleted after use


def test_gradio_predict_batch_corpus(client, files, reference):
    from gradio_client import handle_file

    table, csv_path, summary = client.predict([handle_file(str(files[n])) for n in CASES], api_name="/predict_batch")
    rows = {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    assert list(rows) == [corpus()[n].upload_name for n in CASES]
    for name in CASES:
        case = corpus()[name]
        row = rows[case.upload_name]
        prob, verdict, note = row["fake_prob"], row["verdict"], row["note"]
        if case.ok:
            assert verdict in ("REAL", "UNCERTAIN", "FAKE") and float(prob) == pytest.approx(reference[name], abs=TOL)
        else:
            assert verdict == "error" and case.error in note, (name, note)
    n_bad = sum(not c.ok for c in corpus().values())
    assert f"{n_bad} error" in summary and Path(csv_path).is_file()
    assert not [n for n in CASES if _left_in_uploads(corpus()[n].upload_name)]


@pytest.mark.parametrize("name", CASES)
def test_cli_corpus(model_dir, files, reference, capsys, name):
    case = corpus()[name]
    status = cli.main(["predict", str(files[name]), "--format", "jsonl", "--detector", "none",
                       "--model", str(model_dir), "--quiet"])
    out = capsys.readouterr().out
    (row,) = [json.loads(line) for line in out.splitlines()]
    if case.ok:
        assert status == 0 and not row.get("error")
        assert row["fake_prob"] == pytest.approx(reference[name], abs=TOL)
    else:
        assert status == 1 and case.error in row["error"] and row["fake_prob"] is None


def test_identical_uploads_are_deleted_after_the_last_use_not_the_first(url, client, tmp_path):
    """Gradio stores identical uploads under one path: the first use must not delete the second's file."""
    from gradio_client import handle_file

    path = tmp_path / f"{TOKEN}-twice.png"
    path.write_bytes(GOOD)
    # Someone else uploads the same file and has not used it yet...
    (first,) = httpx.post(f"{url}/gradio_api/upload", files={"files": (path.name, GOOD)}, timeout=30).json()
    client.predict(handle_file(str(path)), api_name="/predict")  # ...while this call uploads and uses it
    assert Path(first).is_file() and app.UPLOADS.pending(first) == 1  # still there for the first uploader
    app.UPLOADS.release([first], _upload_folder())  # what the first uploader's event does when done
    assert not Path(first).exists()


def test_upload_tracker_counts_uses(tmp_path):
    from fakeface.space.uploads import UploadTracker

    root = tmp_path / "uploads"
    (root / "h").mkdir(parents=True)
    shared = root / "h" / "a.png"
    shared.write_bytes(b"x")
    tracker = UploadTracker()
    tracker.claim([str(shared), str(shared)])
    tracker.release([shared], root)
    assert shared.exists()
    tracker.release([shared], root)
    assert not shared.exists() and tracker.pending(shared) == 0
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    tracker.release([outside], root)  # never outside the upload folder
    assert outside.exists()


def test_cli_whole_corpus_at_once(model_dir, files, reference, capsys):
    """Good and bad files in one run: a row each, in order; the bad ones do not cost the good ones their answer."""
    status = cli.main(["predict", *(str(files[n]) for n in CASES), "--format", "jsonl", "--detector", "none",
                       "--model", str(model_dir), "--quiet"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1 and [Path(r["path"]).name for r in rows] == [corpus()[n].upload_name for n in CASES]
    for name, row in zip(CASES, rows):
        case = corpus()[name]
        if case.ok:
            assert not row.get("error") and row["fake_prob"] == pytest.approx(reference[name], abs=TOL), name
        else:
            assert case.error in row["error"], name


def test_broken_header_is_called_corrupt_not_unknown():
    data = bytearray(_encode(scene(), "PNG"))
    data[data.index(b"IHDR") + 4 + 13] ^= 0xFF  # the header chunk's checksum
    with pytest.raises(FakefaceError, match="truncated or corrupt.*PNG header"):
        load_image(bytes(data))


# ------------------------------------------------------------------------------------------- zips (batch)


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_batch_zip_with_traversal_entries_writes_nothing(client, tmp_path, workdir):
    from gradio_client import handle_file

    marker = f"escaped-{TOKEN}"
    archive = _zip(tmp_path / f"{TOKEN}-traversal.zip", {
        f"../../{marker}.png": GOOD, f"../{marker}2.png": GOOD, f"/{marker}3.png": GOOD,
        f"ok/../../{marker}4.png": GOOD, "good.png": GOOD})
    table, _, summary = client.predict([handle_file(str(archive))], api_name="/predict_batch")
    rows = {row[0].split("/", 1)[1]: row for row in table["data"]}
    assert rows["good.png"][3] in ("REAL", "UNCERTAIN", "FAKE", "NO FACE")
    unsafe = [row for name, row in rows.items() if name != "good.png"]
    assert len(unsafe) == 4 and all(r[3] == "error" and "skipped" in r[4] for r in unsafe)
    uploads = _upload_folder()
    for folder in {workdir, uploads, uploads.parent, tmp_path, tmp_path.parent, Path.cwd()}:
        assert not list(folder.glob(f"{marker}*")), folder
    assert not list(uploads.rglob(f"{marker}*"))
    assert not _left_in_uploads(archive.name)


def test_batch_zip_bombs(client, tmp_path):
    from gradio_client import handle_file

    # One entry that inflates past the per-image limit: that row fails, the good image beside it is classified.
    entry_bomb = _zip(tmp_path / f"{TOKEN}-entry-bomb.zip", {"big.png": bytes(MAX_FILE_BYTES + 1024), "good.png": GOOD})
    assert entry_bomb.stat().st_size < 200_000
    table, _, _ = client.predict([handle_file(str(entry_bomb))], api_name="/predict_batch")
    rows = {row[0].split("/", 1)[1]: row for row in table["data"]}
    assert rows["big.png"][3] == "error" and "too large" in rows["big.png"][4]
    assert rows["good.png"][3] in ("REAL", "UNCERTAIN", "FAKE", "NO FACE")
    # Entries that are each allowed but together inflate past the batch limit: refused before any is inflated.
    n = batch.MAX_BATCH_BYTES // (25 * 1024 * 1024) + 1
    batch_bomb = _zip(tmp_path / f"{TOKEN}-batch-bomb.zip", {f"{i}.png": bytes(25 * 1024 * 1024) for i in range(n)})
    table, csv_path, summary = client.predict([handle_file(str(batch_bomb))], api_name="/predict_batch")
    assert "Batch refused" in summary and "MB" in summary and not table["data"] and csv_path is None
    assert not _left_in_uploads(entry_bomb.name) and not _left_in_uploads(batch_bomb.name)


# ----------------------------------------------------------------------------------------------- same answer


def test_same_answer_everywhere_and_exif_applied_everywhere(url, client, predictor, model_dir, tmp_path, capsys):
    """One image, alone or in a batch with others, through every path: |Δp| <= 1e-3; a JPEG stored on its side
    with EXIF orientation gets the score of the same pixels saved upright, everywhere."""
    from gradio_client import handle_file

    images = {"upright.png": upright_twin(), "rotated.jpg": exif_rotated_jpeg(), "other.png": photo_bytes(seed=5)}
    paths = {}
    for name, data in images.items():
        paths[name] = tmp_path / f"{TOKEN}-same-{name}"
        paths[name].write_bytes(data)
    direct = {n: predictor.predict_file(d).fake_prob for n, d in images.items()}
    # Guard: the test can see a missing rotation, since the sideways pixels score differently.
    sideways = Image.open(io.BytesIO(images["rotated.jpg"])).convert("RGB")
    assert abs(predictor.predict_image(sideways).fake_prob - direct["upright.png"]) > 10 * TOL

    got = {"direct": direct, "rest": {}, "gradio": {}}
    for name, data in images.items():
        got["rest"][name] = _rest(url, name, data).json()["fake_prob"]
        label = client.predict(handle_file(str(paths[name])), api_name="/predict")
        got["gradio"][name] = {c["label"]: c["confidence"] for c in label["confidences"]}["FAKE"]
    table, _, _ = client.predict([handle_file(str(p)) for p in paths.values()], api_name="/predict_batch")
    got["batch"] = dict(zip(images, (float(row[2]) for row in table["data"])))
    assert cli.main(["predict", *map(str, paths.values()), "--format", "jsonl", "--detector", "none",
                     "--model", str(model_dir), "--quiet"]) == 0
    got["cli"] = dict(zip(images, (json.loads(line)["fake_prob"] for line in capsys.readouterr().out.splitlines())))

    for path_name, probs in got.items():
        for name in images:
            assert probs[name] == pytest.approx(direct[name], abs=TOL), (path_name, name)
        assert probs["rotated.jpg"] == pytest.approx(probs["upright.png"], abs=TOL), path_name


# -------------------------------------------------------------------------------------------------- overload


class _GatedPredictor(Predictor):
    """Holds each prediction until `release` is set (at most 20 s), so a test controls what is running."""

    def __init__(self):
        from fakeface.models import create_model

        super().__init__(create_model("efficientnet-lite0", pretrained=False), detector="none")
        self.release, self.running = threading.Event(), threading.Event()

    def predict_file(self, source, threshold=None, heatmap=False):
        if not self.release.is_set():
            self.running.set()
            self.release.wait(20)
        return Prediction(0.25, self.threshold if threshold is None else threshold, 0.1, [], face_found=False)


@pytest.fixture
def gated(monkeypatch, workdir):
    """(predictor, url, REST gate) for a server with 1 REST slot, 1 waiting place and a 1.5 s time limit."""
    gates = []

    class RecordedGate(serving.ModelGate):
        def __init__(self, *args):
            super().__init__(*args)
            gates.append(self)

    monkeypatch.setattr(serving, "ModelGate", RecordedGate)
    monkeypatch.setattr(serving, "MODEL_SLOTS", 1)
    monkeypatch.setattr(serving, "REST_MAX_WAITING", 1)
    monkeypatch.setattr(rest, "REST_TIME_LIMIT_S", 1.5)
    predictor = _GatedPredictor()
    try:
        with running_app(predictor) as base:
            yield predictor, base, gates[0]
    finally:
        predictor.release.set()


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_rest_overload_is_prompt_and_bounded(gated):
    predictor, url, gate = gated
    answers = {}

    def send(key):
        answers[key] = _rest(url, f"{key}.png", GOOD)

    running = threading.Thread(target=send, args=("running",))
    running.start()
    _wait_for(predictor.running.is_set)
    queued = threading.Thread(target=send, args=("queued",))
    queued.start()
    _wait_for(lambda: gate.held == 2)

    start = time.monotonic()
    busy = _rest(url, "busy.png", GOOD)  # one running, one waiting: no room
    assert busy.status_code == 503 and time.monotonic() - start < 1.0
    assert busy.headers["Retry-After"] == str(serving.RETRY_AFTER_S) and "busy" in busy.json()["error"]

    running.join(30)
    queued.join(30)
    assert answers["running"].status_code == 504 and "limit" in answers["running"].json()["error"]
    assert answers["queued"].status_code == 503  # gave up in the queue; its work was cancelled, never ran
    assert gate.held == 1  # the abandoned computation still holds its slot: abandoned work cannot pile up
    predictor.release.set()
    _wait_for(lambda: gate.held == 0)
    assert _rest(url, "after.png", GOOD).status_code == 200


def test_rest_one_client_past_its_limit_gets_a_prompt_429(monkeypatch, workdir):
    monkeypatch.setattr(rest, "REST_MAX_PER_CLIENT", 1)
    predictor = _GatedPredictor()
    answers = {}
    try:
        with running_app(predictor) as url:
            first = threading.Thread(target=lambda: answers.setdefault("first", _rest(url, "first.png", GOOD)))
            first.start()
            _wait_for(predictor.running.is_set)
            start = time.monotonic()
            second = _rest(url, "second.png", GOOD)  # the same client while its first request is held
            assert second.status_code == 429 and time.monotonic() - start < 1.0
            assert second.headers["Retry-After"] == str(serving.RETRY_AFTER_S) and "at once" in second.json()["error"]
            predictor.release.set()
            first.join(30)
            assert answers["first"].status_code == 200 and _rest(url, "third.png", GOOD).status_code == 200
    finally:
        predictor.release.set()


def test_gradio_queue_full_is_a_prompt_503(gated):
    predictor, url, _ = gated
    config = httpx.get(f"{url}/config", timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "predict")
    (path,) = httpx.post(f"{url}/gradio_api/upload", files={"files": ("q.png", GOOD)}, timeout=30).json()
    payload = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, None], "fn_index": fn_index,
               "trigger_id": None, "event_data": None}
    statuses = []
    for i in range(app.QUEUE_MAX_SIZE + 3):
        start = time.monotonic()
        r = httpx.post(f"{url}/gradio_api/queue/join", json={**payload, "session_hash": f"{TOKEN}{i}"}, timeout=30)
        statuses.append(r.status_code)
        if r.status_code == 503:
            assert "Queue is full" in r.text and time.monotonic() - start < 2.0
    assert statuses.count(200) <= app.QUEUE_MAX_SIZE + 1 and statuses[-1] == 503
    predictor.release.set()
    assert _rest(url, "after.png", GOOD).status_code == 200


def _raw_status(url: str, head: str, body: bytes = b"") -> bytes:
    """The status line the server answers to a hand-made request (it may answer before reading all of it)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(head.encode() + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before taking the rest
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_upload_request_size_is_bounded(url):
    # Gradio takes many files per upload request; their sum is refused from the declared length alone.
    head = (f"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {app.MAX_UPLOAD_REQUEST + 1}\r\n\r\n")
    assert b" 413 " in _raw_status(url, head)
    chunked = ("POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
               "Transfer-Encoding: chunked\r\n\r\n")
    assert b" 411 " in _raw_status(url, chunked, b"5\r\nhello\r\n")


def test_rest_chunked_body_is_counted(url):
    def chunks(total: int):
        sent = 0
        while sent < total:
            part = min(1024 * 1024, total - sent)
            sent += part
            yield bytes(part)

    # A body without a declared length is read only up to the limit.
    head = (f"POST {rest.REST_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks(rest.REST_MAX_BODY + 256 * 1024))
    assert b" 413 " in _raw_status(url, head, body)
    # ... and a good image sent chunked is classified.
    boundary = "fakefaceboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + GOOD + f"\r\n--{boundary}--\r\n".encode()
    r = httpx.post(f"{url}{rest.REST_PATH}", content=iter([form[:1000], form[1000:]]), timeout=60,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200 and r.json()["filename"] == "c.png"


def test_batch_time_limit_reports_the_rest_as_not_analysed():
    class Slow(_GatedPredictor):
        def predict_file(self, source, threshold=None, heatmap=False):
            time.sleep(0.3)
            return Prediction(0.7, 0.5, 0.1, [FaceResult(0.7, (0, 0, 8, 8), None)])

    items = [batch.BatchItem(f"{i}.png", data=GOOD) for i in range(3)]
    rows = batch.predict_batch_rows(Slow(), items, time_limit_s=0.1)
    assert rows[0]["verdict"] == "FAKE"
    assert [r["verdict"] for r in rows[1:]] == ["error", "error"] and "time limit" in rows[1]["note"]


def test_batch_row_survives_a_bug_in_one_image(caplog):
    class Buggy(_GatedPredictor):
        def predict_file(self, source, threshold=None, heatmap=False):
            if source == b"boom":
                raise ValueError("a bug")
            return Prediction(0.2, 0.5, 0.1, [FaceResult(0.2, (0, 0, 8, 8), None)])

    rows = batch.predict_batch_rows(Buggy(), [batch.BatchItem("a.png", data=b"boom"),
                                                batch.BatchItem("b.png", data=GOOD)])
    assert rows[0]["verdict"] == "error" and "internal error" in rows[0]["note"] and "a bug" not in rows[0]["note"]
    assert rows[1]["verdict"] == "REAL"


# ----------------------------------------------------------------------------------------- the page itself


@pytest.mark.slow
def test_page_shows_a_specific_error_then_answers_the_next_image(url, tmp_path):
    """A small subset through a real browser (the gradio_client tests above cover the same event path)."""
    from test_browser import CHROMIUM, CHROMIUM_ARGS

    api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium")
    files = {}
    for name in ("page.png", "truncated.jpg", "rotated.jpg"):
        files[name] = tmp_path / f"page-{TOKEN}-{name}"
        files[name].write_bytes(corpus()[name].data)
    with api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            for name, expected in (("page.png", "not an image"), ("truncated.jpg", "truncated or corrupt")):
                page.goto(url, wait_until="domcontentloaded")
                page.locator("#image-input input[type=file]").set_input_files(str(files[name]))
                summary = page.locator("#summary")
                api.expect(summary).to_contain_text("Could not analyse this image", timeout=60_000)
                api.expect(summary).to_contain_text(expected)
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#image-input input[type=file]").set_input_files(str(files["rotated.jpg"]))
            api.expect(page.locator("#verdict")).to_contain_text(re.compile("REAL|UNCERTAIN|FAKE"), timeout=60_000)
        finally:
            browser.close()


# --------------------------------------------------------------------------------------------- file system


def test_nothing_written_outside_temp_dirs(workdir, url):
    """Runs last in this module: the CWD stayed empty and no upload of ours was left behind (the page's own
    uploads are named apart: the page keeps its image to re-analyse it, until Gradio's delete_cache)."""
    assert not list(workdir.iterdir())
    assert not list(_upload_folder().glob(f"*/{TOKEN}-*"))
