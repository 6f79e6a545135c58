"""The seed's serving design, rebuilt for side-by-side benchmarks: a minimal FastAPI app, POST /predict.

ResNet50 + spatial attention (fakeface's `resnet50-attention`, the same architecture), fp32, torchvision
Resize((224, 224)) / ToTensor / Normalize of the whole image, batch 1, no face detection, no limits. The handler
is `async` and runs the model inline, as a minimal app does: requests are served one at a time on the event loop.
Weights are random unless --model names a trained resnet50-attention folder (speed does not depend on them).

    python benchmarks/seed_server.py --port 8001
    curl -F file=@examples/astronaut.jpg http://127.0.0.1:8001/predict
"""

from __future__ import annotations

import argparse
import io

import torch
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from benchutil import seed_model, seed_transform  # also puts the checkout on sys.path, for fakeface


def create_app(model_dir: str | None = None) -> FastAPI:
    if model_dir:
        from fakeface.models import FakeFaceModel

        model = FakeFaceModel.from_pretrained(model_dir).eval()
    else:
        model = seed_model()
    transform = seed_transform()
    app = FastAPI(title="seed design")

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)):
        image = Image.open(io.BytesIO(await file.read())).convert("RGB")
        with torch.inference_mode():
            logit = model(transform(image)[None])  # fakeface models give one "fake" logit
        fake = float(torch.sigmoid(logit)[0])
        return {"filename": file.filename, "real_prob": 1.0 - fake, "fake_prob": fake,
                "verdict": "FAKE" if fake >= 0.5 else "REAL"}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="The seed's minimal FastAPI server, for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--model", default=None, help="a trained resnet50-attention folder (default: random weights)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(create_app(args.model), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
