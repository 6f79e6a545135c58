"""Experiment (issue 5 lever, lost): the frozen CLIP ViT-B/16 tower rebuilt in PyTorch from the int8 ONNX file.

Question: can the backbone run faster than ONNX Runtime's dynamic-int8 graph (one view at a time) by running
in PyTorch on AMX, batched, with predictions equal to the shipped model's (|dp| <= 0.01)?

Two variants, both from the same int8 weights:
- "bf16": weights de-quantised once (w = (q - zero) x scale), plain bf16 linears; batches without cross-talk.
- "int8-emulated": ORT's dynamic-int8 MatMul reproduced (per-sample uint8 activation quantisation, integer
  product run as an exact bf16 matmul); each block matches ORT to ~1e-3, but quantisation is discontinuous:
  small differences re-draw which activations round up, and the error grows through the 12 blocks.

    python scripts/experiments/torch_clip_tower.py --images 22

prints ms per view (batch 1 and 5) for ORT and both variants, and the shipped probe's |dp| against ORT.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fakeface.clip_backbone import CLIP_INPUT_SIZE, NUM_LAYERS, WIDTH, locate_clip_onnx

HEADS = 12
MLP_WIDTH = 4 * WIDTH
PATCH = 16
LAYER_NORM_EPS = 1e-5
_LINEARS = {"q": "self_attn/q_proj", "k": "self_attn/k_proj", "v": "self_attn/v_proj",
            "out": "self_attn/out_proj", "fc1": "mlp/fc1", "fc2": "mlp/fc2"}


class Int8Linear(nn.Module):
    """ONNX Runtime's dynamic-int8 MatMul, reproduced: each sample's input is quantised to uint8 with its own
    scale and zero point (ONNX DynamicQuantizeLinear), multiplied by the int8 weights, then rescaled.

    The integer product runs as a bf16 matmul: the operands (|x - zero| <= 255, |w| <= 127) are exact in bf16
    and AMX accumulates in fp32, so only the output's rounding to bf16 differs from ORT's int32 result.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.bfloat16))  # integers
        self.register_buffer("scale", torch.zeros(out_features))  # per output channel
        self.register_buffer("bias", torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        low = x.amin(dims, keepdim=True).clamp(max=0)
        high = x.amax(dims, keepdim=True).clamp(min=0)
        step = ((high - low) / 255).clamp(min=1e-12)
        zero = torch.round(-low / step).clamp(0, 255)
        centred = (torch.round(x / step) + zero).clamp(0, 255) - zero
        return F.linear(centred.to(torch.bfloat16), self.weight).float() * (step * self.scale) + self.bias


class Bf16Linear(Int8Linear):
    """The de-quantised weights in a plain bf16 linear (no activation quantisation); see build_tower."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight).float() + self.bias


class _Block(nn.Module):
    """One pre-norm transformer block of CLIP's image tower (quick-GELU MLP)."""

    def __init__(self, linear=Int8Linear):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH, eps=LAYER_NORM_EPS), nn.LayerNorm(WIDTH, eps=LAYER_NORM_EPS)
        self.qkv = linear(WIDTH, 3 * WIDTH)  # q, k and v fused: one matmul instead of three
        self.out = linear(WIDTH, WIDTH)
        self.fc1, self.fc2 = linear(WIDTH, MLP_WIDTH), linear(MLP_WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        x = x + self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, WIDTH))
        h = self.fc1(self.norm2(x))
        return x + self.fc2(h * torch.sigmoid(1.702 * h))


class ClipVisionTower(nn.Module):
    """pixels (B, 3, 224, 224) -> residual stream after each block, (B, 12, 197, 768)."""

    def __init__(self, linear=Int8Linear):
        super().__init__()
        self.patch = nn.Conv2d(3, WIDTH, PATCH, PATCH, bias=False)
        self.class_token = nn.Parameter(torch.zeros(WIDTH))
        self.position = nn.Parameter(torch.zeros((CLIP_INPUT_SIZE // PATCH) ** 2 + 1, WIDTH))
        self.norm_pre = nn.LayerNorm(WIDTH, eps=LAYER_NORM_EPS)
        self.blocks = nn.ModuleList(_Block(linear) for _ in range(NUM_LAYERS))

    def forward(self, pixels: torch.Tensor, layers: list[int] | None = None) -> torch.Tensor:
        """Returns the residual stream after the given blocks (all 12 by default), stacked on dim 1."""
        layers = list(range(NUM_LAYERS)) if layers is None else list(layers)
        x = self.patch(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], 1, -1).to(x.dtype), x], dim=1) + self.position.to(x.dtype)
        x = self.norm_pre(x)
        kept = []
        for index, block in enumerate(self.blocks[: max(layers) + 1]):  # later blocks would be wasted work
            x = block(x)
            if index in layers:
                kept.append(x)
        return torch.stack(kept, dim=1)


def weights_from_onnx(path: str | Path) -> dict[str, torch.Tensor]:
    """The tower's state dict, read from the int8 ONNX file (HF CLIPVisionModel export, dynamic int8 MatMuls)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    matmul_weight = {}  # "layers.3/mlp/fc1" -> de-quantised (in, out) weight
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and "/encoder/layers." in node.name:
            q, zero = init[node.input[1]].astype(np.float32), init[node.input[3]].astype(np.float32)
            scale = init[node.input[1].removesuffix("_quantized") + "_scale"].astype(np.float32)
            key = node.name.split("/encoder/")[1].rsplit("/MatMul_quant", 1)[0]
            matmul_weight[key] = (q - zero, np.broadcast_to(scale, q.shape[1:]))
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # noqa: E731
    prefix = "vision_model."
    state = {
        "patch.weight": t(init[prefix + "embeddings.patch_embedding.weight"]),
        "class_token": t(init[prefix + "embeddings.class_embedding"]),
        "position": t(init[prefix + "embeddings.position_embedding.weight"]),
        "norm_pre.weight": t(init[prefix + "pre_layrnorm.weight"]),
        "norm_pre.bias": t(init[prefix + "pre_layrnorm.bias"]),
    }
    for k in range(NUM_LAYERS):
        src, dst = f"{prefix}encoder.layers.{k}.", f"blocks.{k}."
        parts = {}
        for name, path in _LINEARS.items():
            integers, scale = matmul_weight[f"layers.{k}/{path}"]
            parts[name] = (t(integers.T).to(torch.bfloat16), t(scale), t(init[src + path.replace("/", ".") + ".bias"]))
        fused = {"qkv": [parts["q"], parts["k"], parts["v"]], "out": [parts["out"]], "fc1": [parts["fc1"]],
                 "fc2": [parts["fc2"]]}
        for name, pieces in fused.items():
            for i, field in enumerate(("weight", "scale", "bias")):
                state[f"{dst}{name}.{field}"] = torch.cat([p[i] for p in pieces])
        for norm in ("1", "2"):
            state[f"{dst}norm{norm}.weight"] = t(init[f"{src}layer_norm{norm}.weight"])
            state[f"{dst}norm{norm}.bias"] = t(init[f"{src}layer_norm{norm}.bias"])
    return state


def build_tower(kind: str, path: Path) -> ClipVisionTower:
    tower = ClipVisionTower(Int8Linear if kind == "int8-emulated" else Bf16Linear)
    tower.load_state_dict(weights_from_onnx(path))
    if kind == "bf16":  # fold the per-channel scales into the weights once
        for module in tower.modules():
            if isinstance(module, Bf16Linear):
                module.weight.copy_((module.weight.float() * module.scale[:, None]).to(torch.bfloat16))
    return tower.eval().requires_grad_(False)


def _ms_per_view(run, pixels: np.ndarray, repeats: int = 3) -> float:
    run(pixels)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run(pixels)
    return (time.perf_counter() - start) / repeats / len(pixels) * 1000


def main():
    import argparse
    import glob

    from fakeface.clip_backbone import ClipOnnxEncoder, grid_views, to_clip_pixels
    from fakeface.images import load_image
    from fakeface.models import probabilities
    from fakeface.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ciplab")
    parser.add_argument("--images", type=int, default=22)
    args = parser.parse_args()
    predictor = Predictor.load(None, detector="haar")
    model, recipe = predictor.model, predictor.model.recipe
    onnx_encoder = ClipOnnxEncoder(locate_clip_onnx())
    towers = {kind: build_tower(kind, onnx_encoder.path) for kind in ("bf16", "int8-emulated")}
    runners = {"onnxruntime int8": lambda px: np.stack([onnx_encoder.tokens(p) for p in px])}
    for kind, tower in towers.items():
        runners[kind] = lambda px, tower=tower: torch.inference_mode()(tower)(torch.from_numpy(px)).numpy()

    files = sorted(glob.glob(f"{args.data}/real/*.jpg"))[:: max(1, 865 // (args.images // 2))][: args.images // 2]
    files += sorted(glob.glob(f"{args.data}/fake/*.jpg"))[:: max(1, 768 // (args.images // 2))][: args.images // 2]
    probs = {name: [] for name in runners}
    first_views = None
    for path in files:
        crop = predictor.crops(load_image(path))[0].image
        groups = [grid_views(crop, side, n) for side, n in recipe.views]
        pixels = np.stack([to_clip_pixels(v) for g in groups for v in g])
        first_views = pixels if first_views is None else first_views
        for name, run in runners.items():
            tokens, feats, i = run(pixels), [], 0
            for g in groups:
                feats.append(np.mean([recipe.summarise(tokens[i + j]) for j in range(len(g))], axis=0))
                i += len(g)
            x = torch.from_numpy(np.concatenate(feats).reshape(1, -1).astype(np.float32))
            with torch.no_grad():
                probs[name].append(float(probabilities(model.net(x), model.temperature)[0]))
    reference = np.array(probs["onnxruntime int8"])
    print(f"{len(files)} ciplab images, {len(first_views)} views each; torch threads {torch.get_num_threads()}")
    for name, run in runners.items():
        batch1 = _ms_per_view(run, first_views[:1])
        batch5 = _ms_per_view(run, first_views) if name != "onnxruntime int8" else float("nan")
        dp = np.abs(np.array(probs[name]) - reference)
        flips = int(((np.array(probs[name]) >= model.threshold) != (reference >= model.threshold)).sum())
        print(f"{name:18s} {batch1:6.1f} ms/view (batch 1)  {batch5:6.1f} ms/view (5 views batched)  "
              f"|dp| vs ORT: max {dp.max():.3f} mean {dp.mean():.3f}, verdict flips {flips}")


if __name__ == "__main__":
    main()
