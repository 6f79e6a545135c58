"""Video (fakeface.video): sniffing, limits before decoding, keyframe-seeking sampling, tracks, aggregation, the
clip verdict, bad files and `fakeface predict` on clips.

Every clip is a real encoded file, made like the example clips (fakeface.video_encode: a pan and zoom over the
project's public-domain photos, encoded with PyAV). A tiny untrained EfficientNet-Lite0 with the real face
detector stands in for the model where only the plumbing is tested; the shipped model decides the example clip.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from fakeface import video
from fakeface.cli import main
from fakeface.errors import FakefaceError, TooLargeError
from fakeface.models import create_model
from fakeface.predictor import Predictor
from fakeface.video import (VideoReader, analyse_video, check_frame_count, is_video, link_tracks, min_track_frames,
                            sniff_container, trimmed_mean)
from fakeface.video_encode import encode_clip, pan_zoom_clip, pan_zoom_frames

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def photo(name: str = "grace_hopper.jpg") -> Image.Image:
    return Image.open(EXAMPLES / name).convert("RGB")


def pair(left: str = "grace_hopper.jpg", right: str = "astronaut.jpg", height: int = 240) -> Image.Image:
    """Two portraits side by side: two people, two tracks."""
    images = [photo(left), photo(right)]
    images = [im.resize((round(im.width * height / im.height), height)) for im in images]
    canvas = Image.new("RGB", (sum(im.width for im in images), height))
    canvas.paste(images[0], (0, 0))
    canvas.paste(images[1], (images[0].width, 0))
    return canvas


def solid_clip(path, n: int, size=(64, 64), fps: int = 25, **options) -> str:
    """n frames whose red channel counts the frame number (so a decoded frame says which one it is)."""
    frames = (Image.new("RGB", size, (4 * k % 256, 128, 128)) for k in range(n))
    return encode_clip(frames, path, fps=fps, **options)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    made = {}
    for fmt in ("mp4", "mov", "mkv", "webm", "avi"):
        made[fmt] = Path(pan_zoom_clip(photo(), root / f"hopper.{fmt}", size=(192, 224), seconds=1.0, fps=12,
                                       preset="ultrafast"))
    made["pair"] = Path(pan_zoom_clip(pair(), root / "pair.mp4", size=(384, 192), seconds=2.0, fps=10,
                                      zoom=(1.0, 1.1), pan=(0.0, 1.0), preset="ultrafast"))
    return made


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-model")
    create_model("efficientnet-lite0", pretrained=False, input_size=64).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> Predictor:
    return Predictor.load(tiny_dir)


# ------------------------------------------------------------------------------------------------ sniffing


def test_containers_are_told_apart_by_content(clips, tmp_path):
    for fmt in ("mp4", "mov", "mkv", "webm", "avi"):
        data = clips[fmt].read_bytes()
        assert sniff_container(data[:16]) == {"mkv": "matroska", "webm": "matroska", "avi": "avi"}.get(fmt, "mov")
        assert is_video(data) and is_video(clips[fmt]) and is_video(io.BytesIO(data))
    jpeg = (EXAMPLES / "grace_hopper.jpg").read_bytes()
    renamed = tmp_path / "still.mp4"
    renamed.write_bytes(jpeg)
    assert not is_video(jpeg) and not is_video(renamed)  # a still image renamed .mp4 stays an image
    assert not is_video(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00")  # AVIF shares MP4's box layout
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all")
    assert is_video(garbage)  # neither: the video suffix decides, so the video reader's message is shown
    assert not is_video(tmp_path / "missing.png")


# ------------------------------------------------------------------------------------------------ sampling


def test_every_container_opens_and_samples_evenly(clips):
    for fmt in ("mp4", "mov", "mkv", "webm", "avi"):
        with VideoReader(clips[fmt]) as reader:
            assert (reader.info.width, reader.info.height, reader.info.frame_count) == (192, 224, 12)
            assert reader.info.duration == pytest.approx(1.0)
            frames = list(reader.sample(4))
        # frames 1, 4, 7, 10 of 12: the centre of each quarter
        assert [f.t for f in frames] == pytest.approx([1 / 12, 4 / 12, 7 / 12, 10 / 12], abs=1e-3), fmt
        assert all(f.image.size == (192, 224) and f.image.mode == "RGB" for f in frames)


def test_sampling_seeks_to_keyframes_and_returns_the_exact_frames(tmp_path):
    path = solid_clip(tmp_path / "long.mp4", 300, gop=25, preset="ultrafast", crf=10)
    with av.open(path) as container:  # the reference: a full decode, frame by frame
        reference = [np.asarray(f.to_image(), dtype=int) for f in container.decode(video=0)]
    with VideoReader(path) as reader:
        frames = list(reader.sample(5))
        # 5 targets, each at most one keyframe interval (25 frames) past its keyframe: nowhere near all 300
        assert reader.frames_decoded <= 5 * 25
    want = [int((i + 0.5) * 300 / 5) for i in range(5)]
    assert [round(f.t * 25) for f in frames] == want
    for k, frame in zip(want, frames):
        assert np.abs(np.asarray(frame.image, dtype=int) - reference[k]).max() == 0


def test_more_frames_asked_than_the_clip_has_gives_each_once(tmp_path):
    path = solid_clip(tmp_path / "short.webm", 5, fps=10)
    with VideoReader(path) as reader:
        assert [f.t for f in reader.sample(64)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("bad", [0, 65, -1, 2.5, "many", None, True])
def test_frame_count_is_checked(bad):
    with pytest.raises(FakefaceError, match="whole number from 1 to 64"):
        check_frame_count(bad)
    assert check_frame_count("16") == check_frame_count(16.0) == 16


def test_portrait_phone_clips_are_turned_upright(tmp_path):
    """A phone stores a portrait clip sideways with a display rotation; the sampled frames are upright."""
    path = tmp_path / "rotated.mp4"
    frames = [Image.new("RGB", (64, 32), (200, 0, 0))]
    frames[0].paste((0, 0, 200), (0, 0, 32, 32))  # left half blue
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(-90)  # shown turned 90 degrees clockwise
        for packet in stream.encode(av.VideoFrame.from_image(frames[0])):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with VideoReader(path) as reader:
        image = next(reader.sample(1)).image
    assert image.size == (32, 64)
    top, bottom = np.asarray(image)[4, 16], np.asarray(image)[60, 16]
    assert top[2] > 150 and bottom[0] > 150  # the left (blue) half is on top after a clockwise turn


# ------------------------------------------------------------------------------------------------ limits and bad files


def test_limits_are_refused_before_any_frame_is_decoded(tmp_path, monkeypatch):
    ten_minutes = solid_clip(tmp_path / "ten_minutes.mp4", 600, size=(32, 32), fps=1, preset="ultrafast")
    with pytest.raises(TooLargeError, match=r"video too long: 600 s \(limit 300 s\)"):
        VideoReader(ten_minutes)
    four_k = encode_clip([Image.new("RGB", (3840, 2160))], tmp_path / "4k.mp4", preset="ultrafast")
    with pytest.raises(TooLargeError, match=r"video frames too large: 3840x2160"):
        VideoReader(four_k)
    monkeypatch.setattr(video, "MAX_VIDEO_BYTES", 1000)
    with pytest.raises(TooLargeError, match=r"video too large: \d+ bytes \(limit 1000\)"):
        VideoReader(ten_minutes)


def test_bad_files_get_one_clear_sentence(tmp_path, clips):
    data = clips["mp4"].read_bytes()
    cases = {
        "empty.mp4": b"",
        "garbage.mp4": b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 20,
        "truncated.mp4": data[: len(data) // 2],  # x264 in MP4 writes its index (moov) last: it is lost
        "noise.mkv": b"\x1a\x45\xdf\xa3" + np.random.default_rng(0).bytes(5000),
        "image.avi": b"RIFF\x00\x00\x00\x00AVI " + b"\x00" * 100,
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(FakefaceError) as err:
            with VideoReader(path) as reader:
                list(reader.sample(4))
        message = str(err.value)
        assert message.startswith(str(path)) and "Traceback" not in message and message.count(". ") <= 2, message


def test_a_clip_without_a_video_stream_or_without_frames(tmp_path):
    audio = tmp_path / "voice.m4a"
    with av.open(str(audio), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    with pytest.raises(FakefaceError, match="has no video stream \\(it holds audio\\)"):
        VideoReader(audio)
    for fmt, codec, message in (("avi", "mpeg4", "the video has no frames"),
                                ("matroska", "libx264", "the video ends before its first frame")):
        empty = tmp_path / f"no_frames.{fmt}"
        with av.open(str(empty), "w", format=fmt) as out:
            stream = out.add_stream(codec, rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            out.start_encoding()  # the header, then no frame at all
        with pytest.raises(FakefaceError, match=message):
            VideoReader(empty)


def test_a_damaged_stretch_loses_its_frames_not_the_clip(tmp_path):
    path = pan_zoom_clip(photo(), tmp_path / "clip.mp4", size=(192, 224), seconds=2.0, gop=10, preset="ultrafast")
    data = bytearray(Path(path).read_bytes())
    middle = data.index(b"mdat") + len(data) // 3
    data[middle: middle + 4000] = bytes(4000)  # zeros over a few frames' data
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with VideoReader(damaged) as reader:
        frames = list(reader.sample(8))
        assert len(frames) >= 6 and reader.packets_skipped >= 1


def test_a_truncated_clip_with_its_index_first_answers_from_what_was_read(tmp_path):
    path = tmp_path / "faststart.mp4"
    frames = (Image.new("RGB", (64, 64), (4 * k, 100, 100)) for k in range(50))
    encode_clip(frames, path, preset="ultrafast")
    with av.open(str(path)) as src, av.open(str(tmp_path / "moved.mp4"), "w",
                                             options={"movflags": "faststart"}) as dst:
        out_stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out_stream
                dst.mux(packet)
    data = (tmp_path / "moved.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with VideoReader(cut) as reader:
        frames = list(reader.sample(8))
        assert 0 < len(frames) and reader.info.duration < 2.0
        assert reader.info.truncated and reader.info.header_duration == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------------ tracks


def test_faces_are_linked_by_overlap_and_a_lost_face_rejoins_its_track():
    left, right = (10, 10, 50, 60), (200, 10, 240, 60)
    frames = [[left, right], [right, (12, 12, 52, 62)], [(205, 12, 245, 62)], [(14, 10, 54, 60), (500, 0, 540, 50)]]
    ids = link_tracks(frames)
    assert ids == [[0, 1], [1, 0], [1], [0, 2]] and all(type(k) is int for k in sum(ids, []))  # JSON-ready
    assert link_tracks([[], [left], []]) == [[], [0], []]


def test_trimmed_mean_drops_outliers_in_both_directions():
    assert trimmed_mean([0.9] * 8 + [0.0, 0.01]) == pytest.approx(0.9)  # two bad frames in a fake track
    assert trimmed_mean([0.1] * 8 + [0.99, 0.98]) == pytest.approx(0.1)  # two misfires in a real track
    assert trimmed_mean([0.2, 0.4, 0.9]) == pytest.approx(0.5)  # under 5 frames: all of them
    assert [min_track_frames(n) for n in (1, 4, 8, 16, 64)] == [1, 1, 2, 3, 3]


def test_the_clip_follows_its_most_suspicious_counted_track():
    scored = [(t, [((0, 0, 40, 40), 0.2), ((100, 0, 140, 40), 0.9)]) for t in range(6)]
    scored[3][1].append(((300, 0, 340, 40), 0.99))  # a face seen once: a likely false detection
    result = video._assemble(None, scored, threshold=0.5, band=0.1)
    assert [len(t.probs) for t in result.tracks] == [6, 6, 1]
    assert [t.counted for t in result.tracks] == [True, True, False]
    assert result.deciding_track.id == 1 and result.fake_prob == pytest.approx(0.9) and result.verdict == "FAKE"
    alone = video._assemble(None, [(0, [((0, 0, 40, 40), 0.55)]), (1, [])], threshold=0.5, band=0.1)
    assert alone.tracks[0].counted and (alone.verdict, alone.uncertain, alone.headline) == ("FAKE", True, "UNCERTAIN")
    nobody = video._assemble(None, [(0, []), (1, [])], threshold=0.5, band=0.1)
    assert (nobody.face_found, nobody.fake_prob, nobody.verdict, nobody.uncertain, nobody.headline) == (
        False, None, None, None, "NO FACE")


# ------------------------------------------------------------------------------------------------ scoring


def test_a_frames_scores_are_the_image_routes_for_that_frame(tiny, clips, tmp_path):
    done = []
    result = analyse_video(tiny, clips["pair"], frames=4, progress=lambda k, n: done.append((k, n)))
    assert done == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(result.tracks) == 2 and all(len(t.probs) == 4 for t in result.tracks)
    with VideoReader(clips["pair"]) as reader:
        frames = list(reader.sample(4))
    for frame, scored in zip(frames, result.frames):
        png = tmp_path / f"frame_{frame.t}.png"
        frame.image.save(png)  # lossless: the image route sees exactly the sampled frame
        still = tiny.predict_file(str(png))
        assert [f.box for f in still.faces] == [f.box for f in scored.faces]
        assert [f.fake_prob for f in still.faces] == pytest.approx([f.fake_prob for f in scored.faces], abs=1e-6)
    row = result.as_dict()
    assert row["frames"][0]["faces"][0].keys() == {"box", "fake_prob", "track"}
    assert row["fake_prob"] == pytest.approx(max(t.fake_prob for t in result.tracks), abs=1e-6)


def test_suspicious_frames_come_with_heat_maps(tiny, clips):
    result = analyse_video(tiny, clips["mp4"], frames=6, heatmaps=True, keep=2)
    assert len(result.suspicious) == 2
    top = max(max(f.fake_prob for f in frame.faces) for frame in result.frames)
    assert max(f.fake_prob for f in result.suspicious[0].prediction.faces) == pytest.approx(top, abs=1e-5)
    assert all(f.heatmap is not None for s in result.suspicious for f in s.prediction.faces)


@pytest.mark.slow
def test_the_shipped_model_finds_the_composite_in_the_example_clip():
    predictor = Predictor.load()
    result = analyse_video(predictor, EXAMPLES / "composite_beside_real_pan.mp4", frames=8)
    real, fake = sorted(result.tracks, key=lambda t: t.fake_prob)
    assert len(result.tracks) == 2 and real.fake_prob < predictor.threshold < fake.fake_prob
    assert result.deciding_track is fake and result.verdict == "FAKE"
    assert analyse_video(predictor, EXAMPLES / "grace_hopper_pan.mp4", frames=8).verdict == "REAL"


# ------------------------------------------------------------------------------------------------ CLI


def test_predict_takes_videos_beside_images(tiny_dir, clips, tmp_path, capsys):
    still = tmp_path / "still.mp4"
    still.write_bytes((EXAMPLES / "grace_hopper.jpg").read_bytes())
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clips["mp4"].read_bytes()[:3000])
    out = tmp_path / "rows.jsonl"
    code = main(["predict", "--model", tiny_dir, str(clips["pair"]), str(clips["webm"]), str(still), str(broken),
                 "--frames", "3",
                 "--format", "jsonl", "--output", str(out), "--quiet", "--workers", "0"])
    assert code == 1  # the broken clip
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    pair_row = rows["pair.mp4"]
    assert pair_row["media"] == "video" and pair_row["faces_found"] == 2 and pair_row["frames_sampled"] == 3
    assert len(pair_row["tracks"]) == 2 and "frames" not in pair_row
    assert rows["hopper.webm"]["faces_found"] == 1 and rows["hopper.webm"]["verdict"] in ("REAL", "FAKE")
    assert "media" not in rows["still.mp4"] and rows["still.mp4"]["faces_found"] == 1  # the image route answered
    assert "truncated or corrupt" in rows["broken.mp4"]["error"]
    with pytest.raises(SystemExit):
        main(["predict", str(clips["pair"]), "--frames", "65"])
    assert "whole number from 1 to 64" in capsys.readouterr().err
