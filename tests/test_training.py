import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score

from fakeface.models import create_model
from fakeface.errors import FakefaceError
from fakeface.training import (RESUMABLE_CHANGES, TrainConfig, config_differences, fit, loss_fn, make_config,
                               predict_logits, use_bf16)
from fakeface.transforms import eval_transform

from helpers import TinyNet, cue_image, tiny_set


def test_focal_loss_matches_its_formula():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    p = torch.sigmoid(logits)
    p_t = torch.where(target == 1, p, 1 - p)
    alpha_t = torch.where(target == 1, torch.tensor(0.25), torch.tensor(0.75))
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    got = loss_fn(TrainConfig(loss="focal"))(logits, target)
    assert torch.allclose(got, expected, atol=1e-6)
    # gamma 0 and alpha 0.5 reduce it to half the BCE
    half_bce = loss_fn(TrainConfig(loss="focal", focal_gamma=0.0, focal_alpha=0.5))(logits, target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(half_bce, bce / 2, atol=1e-6)


def test_seed_preset_keeps_the_seed_values():
    c = make_config("seed")
    assert (c.arch, c.batch_size, c.lr, c.weight_decay, c.epochs) == ("resnet50-attention", 24, 2e-4, 1e-5, 20)
    assert (c.loss, c.focal_alpha, c.focal_gamma, c.scheduler, c.plateau_factor, c.plateau_patience) == (
        "focal", 0.25, 2.0, "plateau", 0.5, 3)


def _tensor_set(model, n, seed):
    rng = np.random.default_rng(seed)
    t = eval_transform(model.input_size, model.mean, model.std)
    fake = np.array([i % 2 for i in range(n)], dtype=np.float32)
    x = torch.stack([t(cue_image(bool(f), rng)) for f in fake])
    return torch.utils.data.TensorDataset(x, torch.from_numpy(fake))


@pytest.mark.parametrize("arch", ["resnet50-attention", "efficientnet-lite0", "efficientnet-lite0-attention"])
def test_pixel_architectures_learn_a_cue(arch, tmp_path):
    torch.manual_seed(0)
    # EfficientNet-Lite0 starts from its offline ImageNet weights (how it is used); ResNet50's are unreachable
    model = create_model(arch, pretrained=arch.startswith("efficientnet"), input_size=64)
    config = TrainConfig(arch=arch, epochs=4, batch_size=8, lr=1e-3, loss="bce", scheduler="cosine",
                         early_stopping_patience=10)
    summary = fit(model, _tensor_set(model, 48, 0), _tensor_set(model, 16, 1), config, tmp_path)
    logits, fake = predict_logits(model, torch.utils.data.DataLoader(_tensor_set(model, 40, 2), batch_size=20))
    assert roc_auc_score(fake, logits) > 0.85, (arch, summary)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == summary["epochs_run"] and log[0]["images_per_s"] > 0
    maps = model.spatial_map(next(iter(torch.utils.data.DataLoader(_tensor_set(model, 2, 3), batch_size=2)))[0])
    assert maps.shape[0] == 2 and maps.dim() == 3


def test_precision_auto_picks_bf16_only_for_image_models_on_capable_hardware(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr("fakeface.training.cpu_has_bf16_matrix_units", lambda: True)
    assert use_bf16(TrainConfig(), cpu, "pixels") and use_bf16(TrainConfig(), cuda, "pixels")
    assert not use_bf16(TrainConfig(), cpu, "features")  # the frozen-feature probe stays fp32
    monkeypatch.setattr("fakeface.training.cpu_has_bf16_matrix_units", lambda: False)
    assert not use_bf16(TrainConfig(), cpu, "pixels") and use_bf16(TrainConfig(), cuda, "pixels")
    assert use_bf16(TrainConfig(precision="bf16"), cpu, "features")
    assert not use_bf16(TrainConfig(precision="fp32"), cuda, "pixels")
    with pytest.raises(FakefaceError, match="precision"):
        use_bf16(TrainConfig(precision="fp16"), cpu, "pixels")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_training_in_either_precision_learns_and_says_which(precision, tmp_path):
    torch.manual_seed(0)
    model = create_model("efficientnet-lite0", pretrained=True, input_size=64)
    config = TrainConfig(arch="efficientnet-lite0", epochs=3, batch_size=8, lr=1e-3, loss="bce",
                         scheduler="cosine", precision=precision)
    seen = []  # (training?, output dtype, input channels_last?) of every forward
    model.register_forward_hook(lambda m, args, out: seen.append(
        (m.training, out.dtype, args[0].is_contiguous(memory_format=torch.channels_last))))
    summary = fit(model, _tensor_set(model, 48, 0), _tensor_set(model, 16, 1), config, tmp_path)
    assert summary["precision"] == precision
    bf16 = precision == "bf16"
    assert {(dtype, channels_last) for training, dtype, channels_last in seen if training} == {
        (torch.bfloat16 if bf16 else torch.float32, bf16)}
    logits, fake = predict_logits(model, torch.utils.data.DataLoader(_tensor_set(model, 40, 2), batch_size=20))
    assert roc_auc_score(fake, logits) > 0.85 and np.isfinite(logits).all()


class _KilledAfter(torch.utils.data.Dataset):
    """Raises once `limit` items have been read: a training process killed mid-epoch."""

    def __init__(self, inner, limit):
        self.inner, self.limit, self.reads = inner, limit, 0

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.reads += 1
        if self.limit is not None and self.reads > self.limit:
            raise KeyboardInterrupt("killed")
        return self.inner[i]


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    config = TrainConfig(arch="efficientnet-lite0", epochs=3, batch_size=8, lr=1e-3, loss="focal",
                         scheduler="cosine", early_stopping_patience=10)

    def run(out, kill_after=None):
        torch.manual_seed(0)
        model = create_model("efficientnet-lite0", pretrained=False, input_size=64)
        train = _KilledAfter(_tensor_set(model, 24, 0), kill_after)
        fit(model, train, _tensor_set(model, 8, 1), config, out, resume=True)
        return model

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", kill_after=24 + 12)  # dies halfway through epoch 2
    assert (tmp_path / "b" / "checkpoint.pt").exists() and not list((tmp_path / "b").glob("*.tmp"))
    resumed = run(tmp_path / "b")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    log = (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]


# ------------------------------------------------------------------- resuming only when asked (issue 12)
#
# A tiny conv net on 8x8 noise with a learnable cue: each fit takes well under a second.





TINY = TrainConfig(arch="tiny", epochs=3, batch_size=8, lr=1e-2, loss="bce", scheduler="cosine",
                   early_stopping_patience=10, precision="fp32")


def _tiny_fit(out, config=TINY, resume=False):
    torch.manual_seed(0)
    model = TinyNet()
    summary = fit(model, tiny_set(24, 0), tiny_set(8, 1), config, out, resume=resume)
    return model, summary


def _log_epochs(out):
    return [json.loads(line)["epoch"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_a_second_run_into_the_same_folder_trains_afresh_by_default(tmp_path):
    _tiny_fit(tmp_path)
    other = replace(TINY, lr=3e-3, seed=1)
    model, summary = _tiny_fit(tmp_path, other)  # issue 12: this used to resume, train 0 epochs, report run 1
    assert summary["epochs_run"] == 3 and summary["images_per_s"] is not None  # it trained
    assert _log_epochs(tmp_path) == [1, 2, 3]  # a fresh log, not run 1's lines plus its own
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["config"] == asdict(other)
    fresh, _ = _tiny_fit(tmp_path / "alone", other)  # the same as that config trained in an empty folder
    for key, value in fresh.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_resume_refuses_a_checkpoint_saved_with_another_config_naming_the_fields(tmp_path):
    _tiny_fit(tmp_path)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(FakefaceError, match=r"another config \(lr: 0\.01 there, 0\.003 now; seed: 0 there, 1 now\)"):
        _tiny_fit(tmp_path, replace(TINY, lr=3e-3, seed=1), resume=True)
    with pytest.raises(FakefaceError, match=r"epochs: 3 there, 5 now"):  # cosine: epochs shape the schedule
        _tiny_fit(tmp_path, replace(TINY, epochs=5), resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # a refusal touches nothing
    # the same config resumes the finished run: nothing left to train, the same weights
    model, summary = _tiny_fit(tmp_path, replace(TINY, num_workers=0), resume=True)
    assert summary["epochs_run"] == 3 and summary["images_per_s"] is None


def test_which_config_changes_a_resume_allows():
    saved = asdict(TINY)
    assert RESUMABLE_CHANGES == ("num_workers", "early_exit_band", "early_exit_layers")
    assert config_differences(saved, replace(TINY, num_workers=4, early_exit_band=[0.1, 0.9],
                                             early_exit_layers=1)) == {}
    assert config_differences(saved, replace(TINY, epochs=9)) == {"epochs": (3, 9)}  # cosine: T_max
    plateau = replace(TINY, scheduler="plateau")
    assert config_differences(asdict(plateau), replace(plateau, epochs=9)) == {}  # continue a plateau run
    assert set(config_differences(saved, replace(TINY, precision="bf16", max_steps_per_epoch=2, features={"a": 1}))) \
        == {"precision", "max_steps_per_epoch", "features"}
    older = {k: v for k, v in saved.items() if k != "precision"}  # a checkpoint from before a field existed
    assert config_differences(older, TINY) == {"precision": ("<absent>", "fp32")}


def test_raising_epochs_continues_a_plateau_run_like_an_uninterrupted_one(tmp_path):
    short, longer = replace(TINY, scheduler="plateau", epochs=2), replace(TINY, scheduler="plateau", epochs=4)
    _tiny_fit(tmp_path / "b", short)
    continued, summary = _tiny_fit(tmp_path / "b", longer, resume=True)
    straight, want = _tiny_fit(tmp_path / "a", longer)
    assert summary["epochs_run"] == 4 and _log_epochs(tmp_path / "b") == [1, 2, 3, 4]
    assert summary["best_epoch"] == want["best_epoch"]
    for key, value in straight.state_dict().items():
        assert torch.allclose(continued.state_dict()[key], value, atol=1e-6), key


def test_best_weights_are_their_own_safetensors_file_not_inside_the_checkpoint(tmp_path):
    model, summary = _tiny_fit(tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "scheduler", "state", "config"}
    assert set(ckpt["state"]) == {"epoch", "best_loss", "best_epoch", "bad_epochs"}  # no second copy of weights
    best = load_file(tmp_path / "best.safetensors")
    assert best.keys() == model.state_dict().keys() and not list(tmp_path.glob("*.tmp"))
    for key, value in model.state_dict().items():  # fit leaves the best weights in the model
        assert torch.equal(best[key], value), key
    # on resume the best weights come from that file (here: altered, so they differ from the checkpoint's)
    altered = {k: v + 1 for k, v in best.items()}
    save_file(altered, tmp_path / "best.safetensors", metadata={"epoch": str(summary["best_epoch"] - 1)})
    resumed, _ = _tiny_fit(tmp_path, resume=True)
    for key, value in altered.items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_a_kill_between_checkpoint_and_best_weights_rename_resumes_the_right_best(tmp_path):
    model, summary = _tiny_fit(tmp_path)
    best_epoch = summary["best_epoch"] - 1  # 0-based, as the checkpoint names it
    # the checkpoint names best_epoch, the renamed file is still an older one, the finished .tmp is the right one
    (tmp_path / "best.safetensors").rename(tmp_path / "best.safetensors.tmp")
    save_file({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, tmp_path / "best.safetensors",
              metadata={"epoch": str(best_epoch - 1)})
    resumed, _ = _tiny_fit(tmp_path, resume=True)
    for key, value in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert not (tmp_path / "best.safetensors.tmp").exists()
    assert load_file(tmp_path / "best.safetensors").keys() == model.state_dict().keys()
    # best weights that match no epoch of the checkpoint: refused, not silently used
    save_file({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, tmp_path / "best.safetensors",
              metadata={"epoch": "99"})
    with pytest.raises(FakefaceError, match="does not hold the best weights"):
        _tiny_fit(tmp_path, resume=True)


def test_a_fresh_run_deletes_what_a_killed_earlier_run_left(tmp_path):
    _tiny_fit(tmp_path)
    (tmp_path / "best.safetensors.tmp").write_bytes(b"half written")
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 1, before any checkpoint of its own
        torch.manual_seed(0)
        fit(TinyNet(), _KilledAfter(tiny_set(24, 0), 4), tiny_set(8, 1), replace(TINY, seed=5), tmp_path)
    assert not any((tmp_path / name).exists() for name in (
        "checkpoint.pt", "best.safetensors", "best.safetensors.tmp", "train_log.jsonl"))
