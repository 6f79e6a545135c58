"""Shares of a `py-spy record --format raw --threads --idle` profile of the served app (issue 15).

    python scripts/experiments/pyspy_shares.py prof.txt

Prints how busy the model thread was (samples not waiting in the pool), the shares of its busy samples inside
ONNX Runtime, BlazeFace, its NMS and decoding, and how often the event-loop (main) thread sat in epoll.
"""

import argparse
from collections import Counter

PARTS = {"ONNX Runtime run": "Session.run", "BlazeFace": "detect (fakeface/blazeface.py",
         "BlazeFace NMS": "weighted_nms", "decoding": "load_image"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    args = ap.parse_args()
    model_all = model_busy = main_all = main_epoll = 0
    parts = Counter()
    for line in open(args.profile, encoding="utf-8"):
        if not line.strip():
            continue
        stack, count = line.rstrip().rsplit(" ", 1)
        frames, n = stack.split(";"), int(count)
        if "fakeface-model" in frames[0]:
            model_all += n
            if frames[-1].startswith("_worker"):  # the pool thread waiting for work
                continue
            model_busy += n
            for name, key in PARTS.items():
                if any(key in f for f in frames):
                    parts[name] += n
        elif "MainThread" in frames[0]:
            main_all += n
            main_epoll += n if frames[-1].startswith("EpollSelector.select") else 0
    print(f"model thread busy {100 * model_busy / max(model_all, 1):.1f}% of its {model_all} samples")
    for name in PARTS:
        print(f"  {name}: {100 * parts[name] / max(model_busy, 1):.1f}% of its busy samples")
    print(f"main thread in epoll {100 * main_epoll / max(main_all, 1):.1f}% of its {main_all} samples")


if __name__ == "__main__":
    main()
