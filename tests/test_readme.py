"""The README's examples, run as written against the bundled model: the gradio_client code, the REST call, the
command line and the library lines print what the README says they print.

When the model changes, these fail with the new outputs beside the README's: update the README from them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import httpx
import pytest

import app
from fakeface.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_URL = "http://127.0.0.1:7860"
TOL = 0.005  # scores may move in the last digits between CPUs (int8 ONNX kernels)

pytestmark = pytest.mark.slow


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def block_with(language: str, text: str) -> str:
    (found,) = [b for b in blocks(language) if text in b]
    return found


def block_after(command_block: str, language: str) -> str:
    """The fenced block right after `command_block` (its output)."""
    rest = README[README.index(command_block) + len(command_block):]
    return re.match(rf"```\n```{language}\n(.*?)```", rest, flags=re.S).group(1)


def same(got, want) -> bool:
    """Equal, numbers within TOL, dicts on the README's keys (and no key missing), lists item by item."""
    if isinstance(want, dict):
        return isinstance(got, dict) and set(got) == set(want) and all(same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    if isinstance(want, float) and not isinstance(want, bool):
        return isinstance(got, (int, float)) and abs(got - want) <= TOL
    return got == want


def same_text(got: str, want: str) -> bool:
    """Line by line and word by word, numbers within TOL."""
    def words(text):
        return [re.split(r"([-+]?\d+\.\d+)", line) for line in text.strip().splitlines()]

    got_words, want_words = words(got), words(want)
    if [len(w) for w in got_words] != [len(w) for w in want_words]:
        return False
    for g_line, w_line in zip(got_words, want_words):
        for i, (g, w) in enumerate(zip(g_line, w_line)):
            if i % 2 and abs(float(g) - float(w)) > TOL or not i % 2 and g != w:
                return False
    return True


@pytest.fixture(scope="module")
def url(clip_backbone):
    """The app with the model `python app.py` serves by default (the bundled one, offline)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("FAKEFACE_MODEL", raising=False)
        predictor = app.start_predictor()
        with app.served_in_thread(predictor) as base:
            yield base


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples name files as examples/...


def test_the_two_commands_come_first():
    first = blocks("bash")[0].splitlines()
    assert first[0].startswith("bash scripts/setup.sh && .venv/bin/python app.py ")
    assert first[1].startswith("bash scripts/setup.sh --test && .venv/bin/python -m pytest -q ")
    assert len(README.encode()) < 15_000
    for link in re.findall(r"\]\((docs/[^)]+)\)", README):
        assert (ROOT / link).is_file(), link


def test_gradio_client_example_prints_what_the_readme_says(url, in_root):
    code = block_with("python", "from gradio_client import")
    expected = "\n".join(line[2:] for line in code.splitlines() if line.startswith("# "))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace(README_URL, url), {})  # the README's code, with this test server's address
    printed = "\n".join(line for line in out.getvalue().splitlines()
                        if not line.startswith("Loaded as API"))  # gradio_client's own banner
    assert same_text(printed, expected), printed


def test_rest_example_returns_what_the_readme_shows(url):
    command = block_with("bash", "/api/v1/predict").strip()
    (path,) = re.findall(r"-F file=@(\S+)", command)
    assert command.endswith(f"{README_URL}/api/v1/predict")
    answer = httpx.post(f"{url}/api/v1/predict", files={"file": (Path(path).name, (ROOT / path).read_bytes())},
                        timeout=120).json()
    shown = json.loads(block_after(command + "\n", "json"))
    assert same(answer, shown), json.dumps(answer)


def test_rest_answer_without_a_face_is_as_the_readme_says(url):
    answer = httpx.post(f"{url}/api/v1/predict", timeout=120,
                        files={"file": ("no_face.jpg", (ROOT / "examples" / "no_face.jpg").read_bytes())}).json()
    assert (answer["verdict"], answer["faces_found"], answer["fake_prob"]) == (None, 0, None) and answer["message"]


def test_command_line_example_prints_what_the_readme_says(in_root, capsys, monkeypatch):
    command = block_with("bash", ".venv/bin/fakeface predict").strip()
    assert command.startswith(".venv/bin/fakeface ")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FAKEFACE_MODEL", raising=False)
    main(command.split()[1:])
    got = capsys.readouterr().out
    assert same_text(got, block_after(command + "\n", "text")), got


def test_library_example_runs(in_root, monkeypatch, clip_backbone):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = block_with("python", "from fakeface.predictor import Predictor")
    scope: dict = {}
    exec(code, scope)
    assert scope["pred"].headline == "REAL" and len(scope["pred"].faces) == 2  # as the CLI's table says
    assert os.path.isfile(ROOT / "examples" / "two_faces.jpg")
