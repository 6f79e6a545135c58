# Ablation step 1: cache CLIP ViT-B/16 token summaries (CLS + patch mean, 12 blocks) of ciplab under 14 views
# (224 whole, 2x2 crops of a 448 resize, 3x3 crops at native 600). Usage: python extract_tokens.py [JPEG_QUALITY] [N_VIEWS]
import io, os, sys, time
import numpy as np
from pathlib import Path
from PIL import Image
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fakeface.clip_backbone import ClipOnnxEncoder, grid_views, to_clip_pixels
quality = int(sys.argv[1]) if len(sys.argv) > 1 else 0
root = Path(os.environ.get("CIPLAB", Path(__file__).resolve().parents[3] / "shared" / "data" / "ciplab"))
paths = sorted((root / "fake").glob("*.jpg")) + sorted((root / "real").glob("*.jpg"))
out = Path(os.environ.get("EXP_DIR", "runs/exp")); out.mkdir(parents=True, exist_ok=True)
np.save(out / "labels.npy", np.array([0 if p.parent.name == "fake" else 1 for p in paths]))
(out / "paths.txt").write_text("\n".join(str(p) for p in paths))
enc = ClipOnnxEncoder(threads=2)
V = int(sys.argv[2]) if len(sys.argv) > 2 else 14
mm = np.lib.format.open_memmap(out / f"feats_q{quality}.npy", mode="w+", dtype=np.float16, shape=(len(paths), V, 2, 12, 768))
t0 = time.time()
for i, p in enumerate(paths):
    img = Image.open(p).convert("RGB")
    if quality:
        buf = io.BytesIO(); img.save(buf, "JPEG", quality=quality); img = Image.open(buf).convert("RGB")
    views = grid_views(img, 224, 1) + grid_views(img, 448, 2) + grid_views(img, 600, 3)
    for v, view in enumerate(views[:V]):
        t = enc.tokens(to_clip_pixels(view))
        mm[i, v, 0] = t[:, 0]
        mm[i, v, 1] = t[:, 1:].mean(1)
    if i % 100 == 0:
        print(i, time.time() - t0, flush=True)
mm.flush(); print("done", time.time() - t0)
