"""Face detection and the one crop function (fakeface.faces)."""

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakeface import faces
from fakeface.errors import FakefaceError
from fakeface.faces import FaceBox, FaceCrop, FaceDetector, crop_face, crop_region, face_crops

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(name not in faces.available_backends(),
                                                        reason=f"{name} backend not importable here"))
            for name in ("blazeface", "mtcnn", "haar")]


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def example(name: str) -> Image.Image:
    return Image.open(EXAMPLES / name).convert("RGB")


@pytest.fixture(scope="module", params=BACKENDS)
def detector(request):
    return FaceDetector(request.param)


@pytest.fixture(scope="module")
def framed_astronaut():
    """The astronaut cropped square at the trained framing and resized to 600 px, like a ciplab photo."""
    image = example("astronaut.jpg")
    box = FaceDetector(faces.available_backends()[0]).detect(image)[0] if faces.available_backends() else None
    if box is None:
        pytest.skip("no face detector available")
    return crop_face(image, box, fill_frame=None, output_size=600)


# ------------------------------------------------------------------------------------------------ detection


@pytest.mark.parametrize("name", ["astronaut.jpg", "grace_hopper.jpg"])
def test_finds_the_face_in_each_portrait(detector, name):
    image = example(name)
    boxes = detector.detect(image)
    assert len(boxes) == 1, boxes
    box = boxes[0]
    assert box.size >= detector.min_face_size and box.score >= detector.min_score
    # the face is in the upper middle of both portraits
    cx, cy = box.centre
    assert 0.25 * image.width < cx < 0.75 * image.width and cy < 0.6 * image.height


def test_finds_both_faces_in_the_two_face_image(detector):
    image = example("two_faces.jpg")
    crops = face_crops(image, detector)
    assert len(crops) == 2 and all(c.found for c in crops)
    sizes = [c.box.size for c in crops]
    assert sizes == sorted(sizes, reverse=True)  # largest first
    centres = sorted(c.box.centre[0] for c in crops)
    assert centres[0] < image.width / 2 < centres[1]  # one face in each half
    for c in crops:
        x0, _, x1, _ = crop_region(image.size, c.box)
        assert c.image.width == c.image.height == x1 - x0


@pytest.mark.parametrize("kind", ["gradient", "noise"])
def test_no_face_returns_the_whole_image(detector, kind):
    if kind == "gradient":
        ramp = np.linspace(0, 255, 640, dtype=np.float32)
        pixels = np.stack([np.tile(ramp, (480, 1))] * 3, axis=-1).astype(np.uint8)
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    (crop,) = face_crops(image, detector)
    assert crop.found is False and crop.box is None
    assert np.array_equal(np.asarray(crop.image), pixels)


@pytest.mark.parametrize("size", [(1, 1), (10, 10), (13, 900), (900, 13)])
def test_tiny_and_thin_images_do_not_crash(detector, size):
    image = Image.new("RGB", size, (200, 180, 160))
    (crop,) = face_crops(image, detector)
    assert not crop.found and crop.image.size == size


def test_detects_on_a_large_image_via_downscaled_copy(detector):
    image = example("grace_hopper.jpg")
    big = image.resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC)  # 2048 x 2400
    small_box, big_box = detector.detect(image)[0], detector.detect(big)[0]
    scaled = [v * 4 for v in small_box[:4]]
    assert iou(big_box[:4], scaled) > 0.8  # boxes map back to original pixels


def test_detector_is_safe_to_share_between_threads(detector):
    image = example("two_faces.jpg")
    expected = detector.detect(image)
    results = []
    threads = [threading.Thread(target=lambda: results.append(detector.detect(image))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_backend_choice_and_errors():
    auto = FaceDetector("auto")
    assert auto.backend == (faces.available_backends() or ["none"])[0]
    off = FaceDetector("none")
    assert not off.available and off.detect(example("astronaut.jpg")) == [] and off.note
    with pytest.raises(FakefaceError, match="Unknown face detector"):
        FaceDetector("dlib")


def test_auto_falls_back_to_haar_and_says_so(monkeypatch):
    if faces._haar_path() is None:
        pytest.skip("OpenCV cascades not available")
    from fakeface import blazeface

    monkeypatch.setattr(faces, "_mtcnn_class", lambda: None)  # as when facenet-pytorch cannot be imported
    monkeypatch.setattr(blazeface, "available", lambda: False)  # ... and ai-edge-litert neither
    detector = FaceDetector("auto")
    assert detector.backend == "haar" and "facenet-pytorch" in detector.note
    with pytest.raises(FakefaceError, match="not available"):
        FaceDetector("mtcnn")


needs_blaze_and_mtcnn = pytest.mark.skipif(
    not {"blazeface", "mtcnn"} <= set(faces.available_backends()), reason="BlazeFace and MTCNN both needed")


@needs_blaze_and_mtcnn
def test_blazeface_answers_alone_where_the_face_fills_the_frame(framed_astronaut, monkeypatch):
    """A face crop (like every training photo): BlazeFace decides, MTCNN never runs, and the crop is the one
    MTCNN alone gives (the whole image)."""
    cascade, mtcnn = FaceDetector("blazeface"), FaceDetector("mtcnn")
    assert cascade.backend == "blazeface" and cascade.fallback == "mtcnn"
    expected = face_crops(framed_astronaut, mtcnn)[0]
    monkeypatch.setattr(FaceDetector, "_run_mtcnn", lambda *a: pytest.fail("MTCNN ran"))
    (crop,) = face_crops(framed_astronaut, cascade)
    assert faces.fills_frame(framed_astronaut.size, crop.box)
    assert np.array_equal(np.asarray(crop.image), np.asarray(expected.image))


@needs_blaze_and_mtcnn
def test_blazeface_hands_wide_photos_to_the_fallback():
    """Two faces in a wide photo: the smaller is beyond BlazeFace short range, so MTCNN looks and finds both."""
    image = example("two_faces.jpg")
    blaze = faces.FaceDetector("blazeface")
    assert len(blaze._detect_with("blazeface", blaze.min_score, image)) < 2  # BlazeFace alone misses one
    boxes = blaze.detect(image)
    assert [tuple(b) for b in boxes] == [tuple(b) for b in FaceDetector("mtcnn").detect(image)]
    assert faces.crop_settings(blaze)["fallback"] == "mtcnn"


def test_blazeface_decoding_parts():
    from fakeface import blazeface

    assert blazeface.anchor_centres().shape == (896, 2)  # 16x16x2 + 8x8x6, as MediaPipe's graph
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float64)
    merged = blazeface.weighted_nms(boxes, np.array([0.9, 0.6, 0.7]))
    assert len(merged) == 2 and merged[0][4] == 0.9 and np.allclose(merged[1][:4], (50, 50, 60, 60))
    assert 0 < merged[0][0] < 1  # the overlapping pair became their score-weighted mean
    # stopping at min_score gives exactly the groups a threshold after the full NMS keeps
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (300, 2))
    many = np.hstack([corners, corners + rng.uniform(5, 30, (300, 2))])
    scores = rng.uniform(0, 1, 300)
    full = [b for b in blazeface.weighted_nms(many, scores) if b[4] >= 0.5]
    assert blazeface.weighted_nms(many, scores, min_score=0.5) == full and len(full) > 1


def test_without_a_detector_the_whole_image_is_used():
    image = example("astronaut.jpg")
    for detector in (None, FaceDetector("none")):
        (crop,) = face_crops(image, detector)
        assert not crop.found and crop.box is None and crop.image.size == image.size


# ----------------------------------------------------------------------------------------------------- crops


def test_face_box_reads_like_a_tuple():
    box = FaceBox(10, 20, 50, 80, 0.9)
    assert tuple(box) == (10, 20, 50, 80, 0.9) and box[:4] == (10, 20, 50, 80)
    assert (box.width, box.height, box.size, box.centre) == (40, 60, 60, (30.0, 50.0))


def test_crop_is_a_square_of_margin_times_face_centred_a_little_above_the_box():
    image = Image.new("RGB", (1000, 800))
    box = FaceBox(400, 300, 480, 400)  # 80 x 100 face
    x0, y0, x1, y1 = crop_region(image.size, box)
    side = round(faces.MARGIN * 100)
    assert x1 - x0 == y1 - y0 == side
    assert abs((x0 + x1) / 2 - 440) <= 1
    assert abs((y0 + y1) / 2 - (350 + faces.CENTRE_SHIFT_Y * 100)) <= 1
    assert crop_face(image, box).size == (side, side)
    assert crop_face(image, box, output_size=224).size == (224, 224)


def test_crop_of_a_face_filled_square_is_the_image_itself(framed_astronaut, detector):
    (crop,) = face_crops(framed_astronaut, detector)
    assert crop.found
    assert crop_region(framed_astronaut.size, crop.box) == (0, 0, 600, 600)
    assert np.array_equal(np.asarray(crop.image), np.asarray(framed_astronaut))


def test_face_in_a_larger_canvas_gets_the_same_framing(framed_astronaut, detector):
    canvas = Image.new("RGB", (1600, 1200), (128, 128, 128))
    ox, oy = 700, 350
    canvas.paste(framed_astronaut, (ox, oy))
    crops = face_crops(canvas, detector)
    assert len(crops) == 1 and crops[0].found
    x0, y0, x1, y1 = crop_region(canvas.size, crops[0].box)
    in_original = (x0 - ox, y0 - oy, x1 - ox, y1 - oy)
    assert iou(in_original, (0, 0, 600, 600)) > 0.8
    # in the canvas the face does not fill the frame: a BlazeFace detector handed it to its fallback
    same = FaceDetector(detector.fallback) if detector.fallback else detector
    exact = crop_region(framed_astronaut.size, same.detect(framed_astronaut)[0], fill_frame=None)
    assert iou(in_original, exact) > 0.85


@pytest.mark.parametrize("box", [FaceBox(-30, -20, 70, 100), FaceBox(560, 700, 640, 800), FaceBox(0, 0, 5, 5)])
def test_box_at_the_border_gives_a_full_size_crop_inside_the_image(box):
    image = Image.new("RGB", (640, 800), (10, 20, 30))
    x0, y0, x1, y1 = crop_region(image.size, box)
    side = max(1, round(faces.MARGIN * box.size))
    assert x1 - x0 == y1 - y0 == side
    assert 0 <= x0 and 0 <= y0 and x1 <= 640 and y1 <= 800  # shifted inside, nothing padded
    assert crop_face(image, box).size == (side, side)


def test_square_that_cannot_fit_is_padded_with_edge_pixels():
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, :150] = (255, 0, 0)
    pixels[:, 150:] = (0, 0, 255)
    box = FaceBox(10, 20, 90, 80)  # crop side 106 > image height 100; fill_frame=None keeps the framing
    crop = crop_face(Image.fromarray(pixels), box, fill_frame=None)
    assert crop.size == (106, 106)
    out = np.asarray(crop)
    assert (out[..., 2] == 0).all() and (out[..., 0] == 255).all()  # only replicated red, no black, no blue
    # with the default, the face "fills the frame" and the crop becomes the largest square that fits
    assert crop_face(Image.fromarray(pixels), box).size == (100, 100)


def test_crop_of_a_box_entirely_outside_the_image_still_has_the_right_size():
    image = Image.new("RGB", (50, 40), (1, 2, 3))
    crop = crop_face(image, FaceBox(500, 500, 560, 560), fill_frame=None)
    assert crop.size == (80, 80) and crop.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize("size", [(1, 1), (10, 10)])
def test_crop_of_tiny_images(size):
    image = Image.new("RGB", size, (9, 9, 9))
    for box in (FaceBox(0, 0, size[0], size[1]), FaceBox(0, 0, 0.1, 0.1), FaceBox(3, 3, 40, 40)):
        crop = crop_face(image, box)
        assert crop.width == crop.height >= 1


def test_non_rgb_input_is_converted():
    image = Image.new("L", (300, 300), 128)
    crop = crop_face(image, FaceBox(100, 100, 160, 170))
    assert crop.mode == "RGB"
    (whole,) = face_crops(Image.new("RGBA", (64, 64)), None)
    assert whole.image.mode == "RGB" and isinstance(whole, FaceCrop)


@pytest.mark.slow
def test_ciplab_photos_come_back_whole(ciplab_dir):
    if not faces.available_backends():
        pytest.skip("no face detector available")
    detector = FaceDetector("auto")
    paths = sorted((ciplab_dir / "real").glob("*.jpg"))[:3] + sorted((ciplab_dir / "fake").glob("*.jpg"))[:3]
    for path in paths:
        image = Image.open(path).convert("RGB")
        crops = face_crops(image, detector)
        assert crops[0].image.size == image.size, path.name


def test_serving_detector_follows_the_models_crop_settings(caplog):
    """faces.detector_for: a model's recorded detection size and smallest face are used; what cannot be
    matched (another backend, other framing constants) is said in one log line."""
    if not faces.available_backends():
        pytest.skip("no face detector available")
    here = faces.available_backends()[0]
    trained = {**faces.crop_settings(FaceDetector(here)), "max_side": 320, "min_face_size": 40}
    with caplog.at_level("WARNING", logger="fakeface.faces"):
        detector = faces.detector_for(trained)
    assert (detector.backend, detector.max_side, detector.min_face_size) == (here, 320, 40)
    assert not caplog.records  # nothing differs
    with caplog.at_level("WARNING", logger="fakeface.faces"):
        faces.detector_for({**trained, "detector": "some-other", "margin": 1.5})
    assert len(caplog.records) == 1 and "detector some-other" in caplog.text and "margin 1.5 -> 1.33" in caplog.text
    assert faces.detector_for(trained, backend="none") is None
