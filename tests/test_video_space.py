"""Video in the Space: the Video tab's views (fakeface/space/video_ui.py), the `/analyse_video` and
`/predict_video` gradio_client endpoints and REST `POST /api/v1/predict_video` over a real server, and the tab in
a real browser. Clips are real encoded files made like the example clips; a tiny untrained model with the real
face detector stands in for the model (wiring and contracts, not accuracy)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from matplotlib.figure import Figure
from PIL import Image

from fakeface.space import video_ui
from fakeface.video import analyse_video
from fakeface.video_encode import pan_zoom_clip
from test_app import client, predictor, url  # noqa: F401  (the app's fixtures: tiny model, server, client)
from test_video import pair

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """Two people side by side, 2 s: two face tracks."""
    return Path(pan_zoom_clip(pair(), tmp_path_factory.mktemp("clip") / "two_people.mp4", size=(384, 192),
                              seconds=2.0, fps=10, zoom=(1.0, 1.1), pan=(0.0, 1.0), preset="ultrafast"))


# ----------------------------------------------------------------------------------------------- the views


def test_timeline_marks_the_threshold_and_draws_a_line_per_track(predictor, clip):
    result = analyse_video(predictor, clip, frames=4, threshold=0.4)
    figure = video_ui.timeline_figure(result)
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    tracks = [line for line in ax.get_lines() if line.get_label().startswith("track")]
    assert len(tracks) == len(result.tracks) == 2
    for line, track in zip(tracks, result.tracks):
        assert list(line.get_xdata()) == track.times and list(line.get_ydata()) == track.probs
    threshold = [line for line in ax.get_lines() if line.get_label().startswith("threshold")]
    assert list(threshold[0].get_ydata()) == [0.4, 0.4]


def test_suspicious_frames_are_boxed_with_their_heat_maps(predictor, clip):
    result = analyse_video(predictor, clip, frames=4, heatmaps=True, keep=2)
    items = video_ui.suspicious_gallery(result)
    frames = [image for image, caption in items if "track" not in caption]
    maps = [caption for _, caption in items if "track" in caption]
    assert len(frames) == 2 and len(maps) == 4  # two frames, two faces each
    assert all(isinstance(image, Image.Image) and max(image.size) <= video_ui.FRAME_SIDE for image in frames)
    assert all(re.fullmatch(r"t = [\d.]+ s · track [12] · fake [\d.]+", caption) for caption in maps)
    summary = video_ui.video_summary(result)
    assert "4 frames sampled from 2.0 s" in summary and "2 face track(s)" in summary and "Frames only" in summary


def test_a_clip_without_faces_has_no_verdict(predictor, tmp_path):
    blank = pan_zoom_clip(Image.new("RGB", (320, 240), (90, 120, 150)), tmp_path / "sky.webm", size=(160, 120),
                          seconds=1.0, fps=8)
    result = analyse_video(predictor, blank, frames=4)
    label, scale, summary, figure = video_ui.render_clip(result)
    assert label == {"label": "NO FACE", "confidences": {}} and "NO FACE FOUND" in scale
    assert summary.startswith("**No verdict.** No face was found in the sampled frames")
    assert video_ui.suspicious_gallery(result) == []
    assert figure.axes[0].texts[0].get_text() == "no face found"
    answer = result.as_dict()
    assert (answer["verdict"], answer["uncertain"], answer["headline"], answer["fake_prob"], answer["faces_found"]) == (
        None, None, "NO FACE", None, 0)
    assert answer["message"].startswith("No face was found in the sampled frames")


# --------------------------------------------------------------------------------------- gradio_client API


def test_predict_video_endpoint(client, clip):
    from gradio_client import handle_file

    answer = client.predict(handle_file(str(clip)), 0.5, 5, api_name="/predict_video")
    assert answer["filename"] == "two_people.mp4" and answer["frames_sampled"] == 5
    assert answer["verdict"] in ("REAL", "FAKE") and len(answer["tracks"]) == 2
    assert [len(f["faces"]) for f in answer["frames"]] == [2] * 5
    assert answer["fake_prob"] == max(t["fake_prob"] for t in answer["tracks"])


def test_analyse_video_endpoint_returns_what_the_tab_shows(client, clip):
    from gradio_client import handle_file

    label, scale, summary, plot, gallery = client.predict(handle_file(str(clip)), 0.5, 4, api_name="/analyse_video")
    assert label["label"] in ("REAL", "FAKE", "UNCERTAIN") and "Fake probability" in scale
    assert "4 frames sampled" in summary and plot is not None and len(gallery) >= 2


def test_predict_video_refuses_an_image_and_a_bad_frame_count(client, clip):
    from gradio_client import handle_file

    with pytest.raises(Exception, match="still image, not a video"):
        client.predict(handle_file(str(EXAMPLES / "grace_hopper.jpg")), 0.5, 4, api_name="/predict_video")
    with pytest.raises(Exception, match="whole number from 1 to 64"):
        client.predict(handle_file(str(clip)), 0.5, 65, api_name="/predict_video")


# ---------------------------------------------------------------------------------------------------- batch


def test_batches_take_images_only_and_say_so_for_clips(predictor, clip, tmp_path):
    import zipfile

    from fakeface.space import batch

    renamed = tmp_path / "clip_renamed.jpg"
    renamed.write_bytes(clip.read_bytes())
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(clip, "inside.mp4")
        zf.write(EXAMPLES / "grace_hopper.jpg", "face.jpg")
    rows = batch.predict_batch_rows(predictor, batch.read_batch([clip, renamed, archive]), None)
    notes = {row["file"]: row["note"] for row in rows}
    for name in ("two_people.mp4", "clip_renamed.jpg", "mixed.zip/inside.mp4"):
        assert notes[name].startswith(f"{name}: a video; batches take images only"), notes
    assert "video" not in notes["mixed.zip/face.jpg"]  # the image in the same zip is analysed


# ----------------------------------------------------------------------------------------------------- REST


def _post(url: str, name: str, data: bytes, **fields) -> httpx.Response:
    from fakeface.space import rest

    return httpx.post(f"{url}{rest.REST_VIDEO_PATH}", files={"file": (name, data, "video/mp4")},
                      data={k: str(v) for k, v in fields.items()}, timeout=120)


def test_rest_predict_video(url, predictor, clip):
    r = _post(url, "two people.mp4", clip.read_bytes(), threshold=0.3, frames=6)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["filename"] == "two people.mp4" and body["threshold"] == 0.3 and body["frames_sampled"] == 6
    assert body["model"] == predictor.source.describe()
    assert body["verdict"] == ("FAKE" if body["fake_prob"] >= 0.3 else "REAL")
    assert isinstance(body["uncertain"], bool) and body["headline"] in ("REAL", "FAKE", "UNCERTAIN")
    assert body["faces_found"] == len(body["tracks"]) == 2
    frame = body["frames"][0]
    assert set(frame) == {"t", "faces"} and len(frame["faces"]) == 2
    assert len(frame["faces"][0]["box"]) == 4 and 0 <= frame["faces"][0]["fake_prob"] <= 1
    default = _post(url, "clip.mp4", clip.read_bytes()).json()
    assert default["frames_sampled"] == 16 and default["threshold"] == pytest.approx(predictor.threshold)


@pytest.mark.parametrize("fields, status, message", [
    ({"frames": 0}, 422, "whole number from 1 to 64"),
    ({"frames": "lots"}, 422, "whole number from 1 to 64"),
    ({"threshold": 2}, 422, "threshold must be a number from 0 to 1"),
])
def test_rest_predict_video_checks_its_fields(url, clip, fields, status, message):
    r = _post(url, "clip.mp4", clip.read_bytes(), **fields)
    assert r.status_code == status and message in r.json()["error"]


def test_rest_predict_video_bad_files(url, clip):
    still = _post(url, "photo.mp4", (EXAMPLES / "grace_hopper.jpg").read_bytes())
    assert still.status_code == 415 and still.json() == {
        "error": "photo.mp4: this is a still image, not a video: analyse it as an image.", "filename": "photo.mp4"}
    cut = _post(url, "cut.mp4", clip.read_bytes()[:5000])
    assert cut.status_code == 400 and "truncated or corrupt" in cut.json()["error"]
    missing = httpx.post(f"{url}/api/v1/predict_video", data={"frames": "4"}, timeout=30)
    assert missing.status_code == 422 and "missing form field 'file'" in missing.json()["error"]


def test_rest_predict_video_refuses_an_oversize_body_before_reading_it(url):
    import http.client

    from fakeface.space import rest

    # Headers only: the server answers from the Content-Length alone, without waiting for the body.
    connection = http.client.HTTPConnection(*url.removeprefix("http://").split(":"), timeout=30)
    connection.putrequest("POST", rest.REST_VIDEO_PATH)
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(rest.REST_VIDEO_MAX_BODY + 1))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 413 and b"too large" in answer.read()
    connection.close()


def test_rest_predict_video_contract_is_in_the_openapi_schema(url):
    from fakeface.space import rest

    schema = httpx.get(f"{url}/api/v1/openapi.json", timeout=30).json()
    route = schema["paths"][rest.REST_VIDEO_PATH]["post"]
    assert {"200", "400", "413", "415", "422", "429", "503", "504"} <= set(route["responses"])
    answer = schema["components"]["schemas"]["VideoAnswer"]["properties"]
    assert {"filename", "verdict", "fake_prob", "uncertain", "tracks", "frames", "faces_found"} <= set(answer)
