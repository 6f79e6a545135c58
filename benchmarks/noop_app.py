"""The protocol floor: a tiny Gradio app whose /predict does nothing, plus a no-op REST route.

Its /predict is set up like the real app's (gr.Image input, gr.Label output, preprocess=False, one call at a
time, the same queue size), so its latency is what Gradio and gradio_client cost before any model work.
POST /api/v1/predict reads the multipart upload and answers a constant: the floor of the REST route.

    GRADIO_SERVER_PORT=7861 python benchmarks/noop_app.py
"""

from __future__ import annotations

import os

import gradio as gr
from fastapi import FastAPI, File, UploadFile

ANSWER = {"REAL": 1.0, "FAKE": 0.0}  # gr.Label sends it as {"label": "REAL", "confidences": [...]}, like the app


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="no-op") as demo:
        image = gr.Image(type="filepath")
        label = gr.Label()

        def predict(image):
            return ANSWER

        # the real app's event settings: raw payloads, one model call at a time
        gr.on([], predict, inputs=[image], outputs=[label], api_name="predict", preprocess=False,
              concurrency_limit=1)
    demo.queue(max_size=16, default_concurrency_limit=1)
    return demo


def create_app() -> FastAPI:
    app = FastAPI(title="no-op")

    @app.post("/api/v1/predict")
    async def predict(file: UploadFile = File(...)):
        await file.read()  # receive the whole upload, as the real route does
        return {"filename": file.filename, "fake_prob": 0.0, "real_prob": 1.0, "verdict": "REAL"}

    return gr.mount_gradio_app(app, build_demo(), path="/")


def main() -> None:
    import uvicorn

    uvicorn.run(create_app(), host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                port=int(os.environ.get("GRADIO_SERVER_PORT", "7861")), log_level="warning")


if __name__ == "__main__":
    main()
