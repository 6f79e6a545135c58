"""Turn an image into the frozen-CLIP feature vector the probe reads, and a heat map of the probe's logit.

A recipe says which views of the (face-cropped) image are encoded and which tokens are kept:
- views: groups of (side, n): resize the image to side x side and take n x n crops of 224 px. (600, 3) keeps
  the native resolution of a 600 px face crop, where composite seams are still visible; (224, 1) is the whole
  face at CLIP's own scale. Views of one group are averaged; groups are concatenated.
- layers: which transformer blocks' residual streams to read (0..11); middle blocks carry more low-level
  evidence than the last one.
- tokens: "cls" (the class token) and/or "patch_mean" (the mean of the patch tokens).
- corners: drop each corner's i + j < corners triangle of patches before the first block (0: keep all 196; 5:
  136 kept), so every block runs on fewer tokens; a face crop's corners are background and hair.
- mirror: each view is also encoded mirrored and the two are averaged (test-time mirroring, in training and
  serving alike), so a mirrored upload gets the same features and the verdict does not hang on which way a
  face looks. Costs one more tower pass per view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .clip_backbone import (GRID, WIDTH, ClipOnnxEncoder, file_sha256, grid_views, kept_patches, locate_clip_onnx,
                            to_clip_pixels)
from .errors import FakefaceError

DEFAULT_RECIPE = {"views": [[224, 1], [448, 2]], "layers": [5, 7, 9, 11], "tokens": ["cls", "patch_mean"],
                  "corners": 0, "mirror": False}


@dataclass(frozen=True)
class FeatureRecipe:
    views: tuple
    layers: tuple
    tokens: tuple
    corners: int = 0
    mirror: bool = False

    @classmethod
    def from_config(cls, config: dict | None) -> "FeatureRecipe":
        config = {**DEFAULT_RECIPE, **(config or {})}
        return cls(tuple(tuple(v) for v in config["views"]), tuple(config["layers"]), tuple(config["tokens"]),
                   int(config["corners"]), bool(config["mirror"]))

    def to_config(self) -> dict:
        return {"views": [list(v) for v in self.views], "layers": list(self.layers), "tokens": list(self.tokens),
                "corners": self.corners, "mirror": self.mirror}

    def group_views(self, image: Image.Image, group: int) -> list[Image.Image]:
        """The 224 px views of one group: the n x n grid, then (with `mirror`) each of them mirrored."""
        side, n = self.views[group]
        views = grid_views(image, side, n)
        return views + [v.transpose(Image.FLIP_LEFT_RIGHT) for v in views] if self.mirror else views

    @property
    def passes(self) -> int:
        """Tower passes per face crop."""
        return sum(n * n for _, n in self.views) * (2 if self.mirror else 1)

    @property
    def dim(self) -> int:
        return len(self.views) * len(self.layers) * len(self.tokens) * WIDTH

    def select(self, summary: np.ndarray, n_layers: int | None = None) -> np.ndarray:
        """A (groups, blocks, 2, 768) summary (see `summarise_all`) -> this recipe's feature vector, laid out as
        (group, layer, token, 768); with `n_layers`, only the recipe's first n layers (the leading slice of each
        group's features, which the early exit reads). The cache stores the all-block summary, so recipes that
        differ only in layers or tokens share it."""
        layers = list(self.layers[:n_layers] if n_layers else self.layers)
        picked = summary[:, layers][:, :, [TOKEN_KINDS.index(k) for k in self.tokens]]
        return np.ascontiguousarray(picked, dtype=np.float32).reshape(-1)


TOKEN_KINDS = ("cls", "patch_mean")


def summarise_all(tokens: np.ndarray) -> np.ndarray:
    """(12, 197, 768) block outputs of one view -> (12, 2, 768): every block's class token and patch mean."""
    return np.stack([tokens[:, 0], tokens[:, 1:].mean(1)], axis=1)


def views_summary(view_tokens: list[np.ndarray]) -> np.ndarray:
    """One view group's summary: `summarise_all` of each view's block outputs, averaged over the views."""
    return np.mean([summarise_all(t) for t in view_tokens], axis=0).astype(np.float32)


class ClipFeaturizer:
    """Image -> feature vector (and optionally the patch tokens needed for a heat map)."""

    def __init__(self, recipe: FeatureRecipe, encoder: ClipOnnxEncoder | None = None):
        if encoder is not None and encoder.corners != recipe.corners:
            raise FakefaceError(f"The encoder drops {encoder.corners}-patch corners, the recipe {recipe.corners}.")
        self.recipe = recipe
        self._encoder = encoder
        # Without an encoder the ONNX session opens on first use: a training pass whose features are all cached
        # needs only the file's hash (for the cache key), not seconds of session start and its memory.
        self._path = encoder.path if encoder else locate_clip_onnx()

    @property
    def encoder(self) -> ClipOnnxEncoder:
        if self._encoder is None:
            self._encoder = ClipOnnxEncoder(self._path, corners=self.recipe.corners)
        return self._encoder

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.features_and_tokens(image)[0]

    def fingerprint(self) -> dict:
        """What shapes a cached summary on this side: the backbone file, the views and the dropped corners (named
        only when some are dropped, so caches written before the option stay valid)."""
        optional = {**({"corners": self.recipe.corners} if self.recipe.corners else {}),
                    **({"mirror": True} if self.recipe.mirror else {})}
        return {"backbone_sha256": file_sha256(self._path), "views": [list(v) for v in self.recipe.views], **optional}

    def summary(self, image: Image.Image) -> np.ndarray:
        """(groups, 12, 2, 768): what the feature cache stores for one face crop."""
        return np.stack([self.group_summary(image, g)[0] for g in range(len(self.recipe.views))])

    def features_and_tokens(self, image: Image.Image):
        """Returns (features (dim,), per-group list of per-view (12, 197, 768) token arrays)."""
        parts = [self.group_features(image, g) for g in range(len(self.recipe.views))]
        return np.concatenate([f for f, _ in parts]), [t for _, t in parts]

    def group_summary(self, image: Image.Image, group: int):
        """(12, 2, 768) summary of one view group, averaged over its views, and the views' tokens."""
        tokens = [self.encoder.tokens(to_clip_pixels(v)) for v in self.recipe.group_views(image, group)]
        return views_summary(tokens), tokens

    def group_features(self, image: Image.Image, group: int):
        """One view group's slice of the feature vector (and its views' tokens): the early exit computes the
        first group alone and the others only when needed."""
        summary, tokens = self.group_summary(image, group)
        return self.recipe.select(summary[None]), tokens

    def first_group_start(self, image: Image.Image, n_layers: int):
        """The first view group run only through the block of the recipe's n-th layer (the encoder must be split
        there): the features of those n layers, and the views' early blocks for `first_group_finish`."""
        if self.encoder.split_after != self.recipe.layers[n_layers - 1]:
            raise FakefaceError(f"The encoder splits after block {self.encoder.split_after}, not after layer "
                                f"{self.recipe.layers[n_layers - 1]}, where this early exit reads.")
        early = [self.encoder.first_blocks(to_clip_pixels(v)) for v in self.recipe.group_views(image, 0)]
        return self.recipe.select(views_summary(early)[None], n_layers), early

    def first_group_finish(self, early):
        """`group_features(image, 0)` from `first_group_start`'s early blocks: only the later blocks are run."""
        tokens = [np.concatenate([e, self.encoder.last_blocks(e)]) for e in early]
        return self.recipe.select(views_summary(tokens)[None]), tokens


def patch_heatmap(recipe: FeatureRecipe, group_tokens, weight: np.ndarray, out_side: int = 56) -> np.ndarray:
    """Per-patch share of the probe's logit, laid out over the image (out_side x out_side grid).

    `weight` is the probe's effective weight per feature (linear weight / feature std). Only the patch_mean
    terms split exactly into patches: each kept patch adds w . token / (views x kept patches) to the logit.
    Positive = the patch pushes towards FAKE. The class-token terms have no location and are left out.
    """
    if "patch_mean" not in recipe.tokens:
        return np.zeros((out_side, out_side), np.float32)
    w = weight.reshape(len(recipe.views), len(recipe.layers), len(recipe.tokens), WIDTH)
    k = recipe.tokens.index("patch_mean")
    kept = kept_patches(recipe.corners)  # dropped corner patches add nothing to the logit
    total = np.zeros((out_side, out_side), np.float64)
    count = np.zeros_like(total)
    for g, ((side, n), views) in enumerate(zip(recipe.views, group_tokens)):
        step = 0 if n == 1 else (side - 224) / (n - 1)

        def patch_grid(tokens):
            per_patch = np.zeros(GRID * GRID)
            per_patch[kept] = sum(tokens[layer, 1:] @ w[g, j, k] for j, layer in enumerate(recipe.layers))
            return per_patch.reshape(GRID, GRID) / (len(views) * len(kept))

        for idx in range(n * n):
            grid = patch_grid(views[idx])
            if len(views) > n * n:  # its mirrored view (FeatureRecipe.group_views): patch (i, j) lies at (i, -1 - j)
                grid = grid + patch_grid(views[n * n + idx])[:, ::-1]
            # place this view's 14x14 grid where the view sits in the image (unit coordinates)
            x0, y0 = (idx % n) * step / side, (idx // n) * step / side
            span = 224 / side
            xs = slice(int(round(x0 * out_side)), int(round((x0 + span) * out_side)))
            ys = slice(int(round(y0 * out_side)), int(round((y0 + span) * out_side)))
            h, wd = ys.stop - ys.start, xs.stop - xs.start
            resized = np.asarray(Image.fromarray(grid.astype(np.float32)).resize((wd, h), Image.BILINEAR))
            total[ys, xs] += resized
            count[ys, xs] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)
