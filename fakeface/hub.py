"""Where models come from: the bundled default, local folders, Hub repos. Pushing them is publish.py's job
(publish imports this module, never the other way round)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import FakefaceError
from .models import FakeFaceModel

# The name the project means to publish its model under (it does not exist on the Hub yet: loading tries it,
# and falls back to the bundled copy, below), and the copy bundled in the package.
DEFAULT_HUB_REPO = "fakeface/fakeface-clip-probe"
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
WEIGHTS_FILE = "model.safetensors"


class ModelUnavailable(FakefaceError):
    """A named model could not be loaded. `reason` is a short clause (no advice) for callers that phrase
    their own sentence, such as the app at start-up."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class ModelSource:
    kind: str  # "local", "hub" or "bundled"
    location: str  # the folder's path, or the Hub repo id
    revision: str | None = None  # the commit, for a Hub model

    @property
    def model_id(self) -> str:
        """What names this model to a user: a Hub id pinned to its commit ('user/repo@<sha>'), which
        FAKEFACE_MODEL and --model accept as is; for a folder, its name and its weights' sha256. Never a
        filesystem path (the page and the REST answers show this)."""
        if self.kind == "hub":
            return f"{self.location}@{self.revision}" if self.revision else self.location
        digest = _weights_digest(self.location)
        name, note = (("fakeface/default_model", "bundled") if self.kind == "bundled"
                      else (f"local folder {Path(self.location).name}", "local"))
        return f"{name} ({note}, weights sha256 {digest[:12]})" if digest else f"{name} ({note})"

    def describe(self) -> str:
        return self.model_id


def _weights_digest(folder: str) -> str | None:
    from .clip_backbone import file_sha256

    try:
        return file_sha256(Path(folder) / WEIGHTS_FILE)
    except OSError:
        return None


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """'user/repo@revision' -> ('user/repo', 'revision'); a local path is returned as is."""
    if os.path.exists(spec) or "@" not in spec:
        return spec, None
    repo, _, revision = spec.rpartition("@")
    return repo, revision or None


def load_model(spec: str | None = None) -> tuple[FakeFaceModel, ModelSource]:
    """Load a model from a local folder, a Hub id ('user/repo[@rev]'), or by default: $FAKEFACE_MODEL, then the
    bundled copy. Only safetensors are ever read. (No project Hub repo is tried unnamed: the project does not own
    one yet, and whoever registered the name would otherwise choose what everyone serves.)"""
    spec = spec or os.environ.get("FAKEFACE_MODEL") or None
    if spec:
        location, revision = parse_model_spec(spec)
        if os.path.isdir(location):
            return FakeFaceModel.from_pretrained(location), ModelSource("local", str(Path(location).resolve()))
        if os.path.exists(location):
            raise FakefaceError(f"{location} is a file; --model takes a model folder or a Hub repo id.")
        return _from_hub(location, revision)
    if not (BUNDLED_MODEL_DIR / WEIGHTS_FILE).exists():
        raise ModelUnavailable(f"No bundled model at {BUNDLED_MODEL_DIR}; pass --model DIR_OR_HUB_ID.",
                               "no model was named and this copy of fakeface has no bundled model")
    return FakeFaceModel.from_pretrained(str(BUNDLED_MODEL_DIR)), ModelSource("bundled", str(BUNDLED_MODEL_DIR))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _from_hub(repo_id: str, revision: str | None) -> tuple[FakeFaceModel, ModelSource]:
    """Resolve the revision to a commit first, then load exactly that commit (config, weights, backbone)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    named = f"{repo_id}@{revision}" if revision else repo_id
    if _offline():
        raise ModelUnavailable(f"Hub model {named} cannot be downloaded with HF_HUB_OFFLINE set; unset it, or "
                               "pass a local folder.", f"HF_HUB_OFFLINE is set, so {named} cannot be downloaded")
    try:
        commit = HfApi().model_info(repo_id, revision=revision).sha
        return FakeFaceModel.from_pretrained(repo_id, revision=commit), ModelSource("hub", repo_id, commit)
    except HFValidationError as exc:
        reason = f"{named} is neither a model folder nor a valid Hub repo id"
        raise ModelUnavailable(f"{reason}.", reason) from exc
    except RevisionNotFoundError as exc:
        reason = f"{repo_id} has no revision {revision} on {hub_endpoint()}"
        raise ModelUnavailable(f"Hub model {reason}.", reason) from exc
    except RepositoryNotFoundError as exc:
        reason = f"Hub model {repo_id} was not found on {hub_endpoint()} (or it is private and HF_TOKEN is unset)"
        raise ModelUnavailable(f"{reason}.", reason) from exc
    except FakefaceError as exc:  # e.g. a repo without model.safetensors
        raise ModelUnavailable(str(exc), " ".join(str(exc).split()).rstrip(".")) from exc
    except Exception as exc:  # offline, DNS, timeouts, HTTP errors: all mean "not from the Hub this time"
        reason = f"{named} could not be downloaded from {hub_endpoint()} ({type(exc).__name__})"
        raise ModelUnavailable(f"Could not download {named} from the Hub ({type(exc).__name__}): check the id "
                               "and your connection, or pass a local folder.", reason) from exc

