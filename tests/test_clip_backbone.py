"""The frozen CLIP tower: its block outputs are exposed once into a cached ONNX file and read back from it."""

import numpy as np
import pytest

from fakeface.clip_backbone import NUM_LAYERS, WIDTH, ClipOnnxEncoder, to_clip_pixels
from fakeface.errors import FakefaceError
from helpers import cue_image


def test_block_outputs_are_cached_once_and_match_the_in_memory_model(tmp_path):
    pixels = to_clip_pixels(cue_image(True, np.random.default_rng(3), size=224))
    cached = ClipOnnxEncoder(threads=1, cache_dir=tmp_path)
    files = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".onnx")  # no temp files left
    onnx_file = next((tmp_path / "onnx").glob("*.onnx"))
    written = onnx_file.stat().st_mtime_ns

    again = ClipOnnxEncoder(threads=1, cache_dir=tmp_path)
    assert onnx_file.stat().st_mtime_ns == written  # reused, not rewritten

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache folder would go")
    in_memory = ClipOnnxEncoder(threads=1, cache_dir=blocked)  # unwritable cache: falls back to bytes

    tokens = cached.tokens(pixels)
    assert tokens.shape == (NUM_LAYERS, 197, WIDTH)
    np.testing.assert_array_equal(tokens, again.tokens(pixels))
    np.testing.assert_array_equal(tokens, in_memory.tokens(pixels))


def test_a_split_tower_computes_exactly_what_the_whole_does(tmp_path):
    """Split after block 5 (the early exit's stop), or cut after block 7 (a recipe reading nothing later): the
    pieces' outputs are the whole tower's, bit for bit, whether they are cached on disk or held in memory."""
    pixels = to_clip_pixels(cue_image(False, np.random.default_rng(4), size=224))
    whole = ClipOnnxEncoder(threads=1, cache_dir=tmp_path).tokens(pixels)
    split = ClipOnnxEncoder(threads=1, cache_dir=tmp_path, split_after=5)
    assert len(list((tmp_path / "onnx").glob("*-to5-11-*.onnx"))) == 2
    first = split.first_blocks(pixels)
    assert first.shape == (6, 197, WIDTH)
    np.testing.assert_array_equal(first, whole[:6])
    np.testing.assert_array_equal(split.last_blocks(first), whole[6:])
    np.testing.assert_array_equal(split.tokens(pixels), whole)

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache folder would go")
    np.testing.assert_array_equal(ClipOnnxEncoder(threads=1, cache_dir=blocked, split_after=5).tokens(pixels), whole)
    short = ClipOnnxEncoder(threads=1, cache_dir=tmp_path, blocks=8, split_after=5)  # blocks 8-11 never run
    np.testing.assert_array_equal(short.tokens(pixels), whole[:8])
    np.testing.assert_array_equal(ClipOnnxEncoder(threads=1, cache_dir=tmp_path, blocks=8).tokens(pixels), whole[:8])
    with pytest.raises(FakefaceError, match="split_after"):
        ClipOnnxEncoder(threads=1, cache_dir=tmp_path, split_after=11)
    with pytest.raises(FakefaceError, match="split_after"):
        ClipOnnxEncoder(threads=1, cache_dir=tmp_path).first_blocks(pixels)


def test_dropped_corners_run_fewer_tokens_and_the_heat_map_still_adds_up(tmp_path):
    """corners=5: 60 of 196 patches never enter the tower; the features change (attention sees fewer tokens),
    and the heat map of the kept patches still sums to the patch-mean part of the probe's logit."""
    from fakeface.clip_backbone import kept_patches
    from fakeface.clip_features import ClipFeaturizer, FeatureRecipe, patch_heatmap

    image = cue_image(True, np.random.default_rng(5), size=224)
    dropping = ClipOnnxEncoder(threads=1, cache_dir=tmp_path, corners=5)
    tokens = dropping.tokens(to_clip_pixels(image))
    assert len(kept_patches(5)) == 136 and tokens.shape == (NUM_LAYERS, 137, WIDTH)
    whole = ClipOnnxEncoder(threads=1, cache_dir=tmp_path).tokens(to_clip_pixels(image))
    assert not np.allclose(tokens[-1, 0], whole[-1, 0], atol=1e-3)

    recipe = FeatureRecipe.from_config({"views": [[224, 1]], "layers": [5, 11], "tokens": ["cls", "patch_mean"],
                                        "corners": 5})
    assert FeatureRecipe.from_config(recipe.to_config()) == recipe
    assert FeatureRecipe.from_config({"views": [[224, 1]]}).corners == 0  # configs from before the option
    feats, group_tokens = ClipFeaturizer(recipe, dropping).features_and_tokens(image)
    weight = np.random.default_rng(6).normal(size=recipe.dim).astype(np.float32)
    heat = patch_heatmap(recipe, group_tokens, weight, out_side=14)  # one cell per patch
    w, f = weight.reshape(2, 2, WIDTH), feats.reshape(2, 2, WIDTH)  # (layer, token, 768)
    assert np.isclose(heat.sum(), sum(w[j, 1] @ f[j, 1] for j in range(2)), rtol=1e-4)
    assert heat[0, 0] == heat[13, 13] == 0 and heat[7, 7] != 0
    with pytest.raises(FakefaceError, match="corners"):
        ClipFeaturizer(recipe, ClipOnnxEncoder(threads=1, cache_dir=tmp_path))


def test_a_mirroring_recipe_gives_a_mirrored_face_the_same_features_and_a_mirrored_heat_map(tmp_path):
    """mirror=True averages each view with its mirror image (test-time mirroring): a mirrored upload gets the
    same features, and the heat map, whose mirrored views are flipped back into place, is mirrored with it."""
    from PIL import Image

    from fakeface.clip_features import ClipFeaturizer, FeatureRecipe, patch_heatmap

    image = cue_image(True, np.random.default_rng(7), size=240)
    recipe = FeatureRecipe.from_config({"views": [[224, 1]], "layers": [5, 11], "tokens": ["cls", "patch_mean"],
                                        "mirror": True})
    assert recipe.passes == 2 and FeatureRecipe.from_config(recipe.to_config()) == recipe
    assert FeatureRecipe.from_config({"views": [[224, 1]]}).mirror is False  # configs from before the option
    featurizer = ClipFeaturizer(recipe, ClipOnnxEncoder(threads=1, cache_dir=tmp_path))
    feats, group_tokens = featurizer.features_and_tokens(image)
    flipped, flipped_tokens = featurizer.features_and_tokens(image.transpose(Image.FLIP_LEFT_RIGHT))
    np.testing.assert_allclose(flipped, feats, rtol=1e-4, atol=1e-4)
    plain = ClipFeaturizer(FeatureRecipe.from_config({**recipe.to_config(), "mirror": False}), featurizer.encoder)
    assert not np.allclose(plain(image), feats, atol=1e-3)  # the mirror view does change the features

    weight = np.random.default_rng(8).normal(size=recipe.dim).astype(np.float32)
    heat = patch_heatmap(recipe, group_tokens, weight, out_side=14)
    np.testing.assert_allclose(patch_heatmap(recipe, flipped_tokens, weight, out_side=14), heat[:, ::-1],
                               rtol=1e-3, atol=1e-4)
    w, f = weight.reshape(2, 2, WIDTH), feats.reshape(2, 2, WIDTH)
    assert np.isclose(heat.sum(), sum(w[j, 1] @ f[j, 1] for j in range(2)), rtol=1e-4)
