"""Resident memory that importing the serving code adds on top of torch, onnxruntime and gradio, and whether it
imports torchvision (README lever table).

    python scripts/experiments/predictor_import_rss.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def rss_mb() -> int:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024


def main() -> None:
    import gradio  # noqa: F401 - the serving process has these loaded before the predictor
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401

    before = rss_mb()
    from fakeface.predictor import Predictor  # noqa: F401

    print(f"importing fakeface.predictor after torch, onnxruntime and gradio: +{rss_mb() - before} MB resident; "
          f"torchvision imported: {'torchvision' in sys.modules}")


if __name__ == "__main__":
    main()
