import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fakeface.models import create_model
from fakeface.errors import FakefaceError
from fakeface.training import TrainConfig, fit, loss_fn, make_config, predict_logits, use_bf16
from fakeface.transforms import eval_transform

from helpers import cue_image


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
        fit(model, train, _tensor_set(model, 8, 1), config, out)
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
