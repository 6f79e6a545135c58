"""Multi-process training: 2 CPU processes (gloo) against 1 process, on a tiny model and tiny tensors.

The two ranks are started once, with torch.multiprocessing.spawn and the environment torchrun would set, and run
every scenario; the tests then compare what they saved with a run in this process.

Why the runs can be equal: `training.fit` treats batch_size as the global batch, so 2 ranks x batch 4 see the
same 8 images per step as 1 process x batch 8 (distributed.epoch_sampler), and DDP's gradient average of the two
half-batch mean losses is the full-batch mean loss's gradient. The model has no BatchNorm and no dropout on
purpose: SyncBatchNorm (which fit uses on CUDA) does not run on CPU, so per-rank BatchNorm statistics would
differ from one process's, and dropout masks are random per rank.
"""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torch import nn

from fakeface import distributed
from fakeface.errors import FakefaceError
from fakeface.training import TrainConfig, fit

CONFIG = TrainConfig(arch="tiny", epochs=2, batch_size=8, lr=1e-2, loss="bce", scheduler="cosine",
                     early_stopping_patience=10, precision="fp32")  # bf16 noise would hide a sync bug
N_IMAGES = 10  # for the sharded feature extraction
RECIPE = {"views": [[224, 1]], "layers": [11], "tokens": ["cls"]}  # the smallest feature vector (768)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.linear = nn.Linear(4, 1)

    def forward(self, x):
        return self.linear(torch.relu(self.conv(x)).mean((2, 3))).squeeze(1)


def tensor_set(n: int, seed: int):
    """Noise with a learnable cue: the first channel is brighter in fakes."""
    g = torch.Generator().manual_seed(seed)
    fake = (torch.arange(n) % 2).float()
    x = torch.rand(n, 3, 8, 8, generator=g)
    x[:, 0] += fake[:, None, None]
    return torch.utils.data.TensorDataset(x, fake)


def train(out_dir: Path, resume: bool = False):
    torch.manual_seed(0)
    model = TinyNet()
    summary = fit(model, tensor_set(36, 0), tensor_set(9, 1), CONFIG, out_dir, resume=resume)  # 36: last batch dropped
    return model, summary


def image_set() -> datasets.Dataset:
    """N_IMAGES distinct PNGs as `featurize` reads them (undecoded bytes)."""
    items = []
    for i in range(N_IMAGES):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (20 * i, 10, 10)).save(buffer, "PNG")
        items.append({"bytes": buffer.getvalue(), "path": None})
    return datasets.Dataset.from_dict({"image": items},
                                      features=datasets.Features({"image": datasets.Image(decode=False)}))


class RecordingFeaturizer:
    """Stands in for the CLIP backbone: the feature is the image's red level; remembers what it computed."""

    def __init__(self):
        self.computed = []

    def fingerprint(self):
        return {"backbone_sha256": "recording", "views": RECIPE["views"]}

    def summary(self, image):
        red = float(np.asarray(image)[0, 0, 0])
        self.computed.append(red)
        return np.full((1, 12, 2, 768), red, np.float32)


def featurize_images(cache_dir: Path):
    from fakeface.models import create_model
    from fakeface.pipeline import featurize

    featurizer = RecordingFeaturizer()
    model = create_model("clip-vit-b16-probe", features=RECIPE)
    feats = featurize(image_set(), model, None, cache_dir=cache_dir, featurizer=featurizer)
    return feats, featurizer.computed


# ------------------------------------------------------------------------------------------ the two ranks


def _rank_main(rank: int, port: int, root: str) -> None:
    """One rank: the environment torchrun sets, then what `fakeface train` does (init_from_env), then work."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", FAKEFACE_DIST_TIMEOUT_MIN="1")  # a bug fails in a minute, not hangs
    torch.set_num_threads(1)
    root = Path(root)
    world = distributed.init_from_env()
    assert (world.rank, world.world_size) == (rank, 2)
    try:
        out = root / f"run{rank}"  # separate folders: only rank 0 may write, and rank 1 must not need its disk
        model, summary = train(out)
        resumed, resumed_summary = train(out, resume=True)  # rank 0's finished checkpoint, handed to rank 1 too
        feats, computed = featurize_images(root / "cache")
        torch.save({"state": model.state_dict(), "summary": summary, "resumed": resumed.state_dict(),
                    "resumed_summary": resumed_summary, "features": feats, "computed": computed},
                   root / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(_free_port(), str(root)), nprocs=2, join=True)
    return root, [torch.load(root / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    model, summary = train(out)
    return out, model, summary


# ------------------------------------------------------------------------------------------------ tests


def test_two_ranks_train_like_one_process(ranks, single):
    (root, saved), (single_dir, model, summary) = ranks, single
    for rank in saved:
        for key, value in model.state_dict().items():
            assert torch.allclose(rank["state"][key], value, atol=1e-5), key
        assert rank["summary"]["processes"] == 2
        assert rank["summary"]["best_epoch"] == summary["best_epoch"]
        assert rank["summary"]["best_val_loss"] == pytest.approx(summary["best_val_loss"], abs=1e-5)
    # the ranks agree exactly with each other (DDP keeps their weights in step)
    for key, value in saved[0]["state"].items():
        assert torch.equal(value, saved[1]["state"][key]), key


def test_losses_are_reduced_over_ranks_and_only_rank_0_writes(ranks, single):
    (root, _), (single_dir, _, _) = ranks, single
    log = [json.loads(line) for line in (root / "run0" / "train_log.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (single_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    for got, want in zip(log, expected):
        for key in ("train_loss", "val_loss", "val_auc", "lr"):
            assert got[key] == pytest.approx(want[key], abs=1e-5), key
    assert (root / "run0" / "checkpoint.pt").exists()
    assert not any((root / "run1").iterdir())


def test_resume_hands_rank_0_checkpoint_to_every_rank(ranks):
    _, saved = ranks
    for rank in saved:  # rank 1's folder is empty: it resumed from what rank 0 broadcast
        assert rank["resumed_summary"]["epochs_run"] == 2
        assert rank["resumed_summary"]["images_per_s"] is None  # resumed the finished run: trained nothing more
        for key, value in rank["state"].items():
            assert torch.equal(rank["resumed"][key], value), key


def test_feature_extraction_is_split_between_ranks(ranks, tmp_path):
    _, saved = ranks
    expected, computed = featurize_images(tmp_path / "cache")
    assert len(computed) == N_IMAGES
    first, second = saved[0]["computed"], saved[1]["computed"]
    assert len(first) == len(second) == N_IMAGES // 2 and sorted(first + second) == sorted(computed)
    for rank in saved:  # every rank ends up with every image's features, in order
        np.testing.assert_array_equal(rank["features"], expected)


# ------------------------------------------------------------------------------------ single-process parts


def test_shard_and_parse_shard():
    paths = [f"p{i}" for i in range(7)]
    shards = [distributed.shard(paths, i, 3) for i in range(3)]
    assert shards == [["p0", "p3", "p6"], ["p1", "p4"], ["p2", "p5"]]
    assert distributed.parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b"):
        with pytest.raises(FakefaceError):
            distributed.parse_shard(bad)


def test_one_process_is_a_world_of_one():
    world = distributed.world()
    assert (world.rank, world.world_size, world.is_main) == (0, 1, True)
    assert distributed.init_from_env().world_size == 1  # WORLD_SIZE unset: nothing to join
    model = TinyNet()
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.sum_across([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]


def test_global_batch_must_split_evenly(monkeypatch, tmp_path):
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(rank=0, world_size=3))
    with pytest.raises(FakefaceError, match="divisible"):
        fit(TinyNet(), tensor_set(8, 0), tensor_set(4, 1), CONFIG, tmp_path)
