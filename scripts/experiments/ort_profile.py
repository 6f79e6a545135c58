"""Where ONNX Runtime spends one CLIP view: kernel time per operator type after its graph optimisations, from its
own profiler, and the form of the int8 weights (signed, zero points).

    python scripts/experiments/ort_profile.py --runs 20
"""

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakeface.clip_backbone import default_intra_op_threads, locate_clip_onnx  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    path = str(locate_clip_onnx())
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMulInteger" and n.input[1] in inits]
    zero_points = [n.input[3] for n in model.graph.node if n.op_type == "MatMulInteger" and len(n.input) > 3
                   and n.input[3] in inits]
    kinds = {onnx.TensorProto.DataType.Name(inits[w].data_type) for w in weights}
    nonzero = sum(int(np.any(numpy_helper.to_array(inits[z]) != 0)) for z in zero_points)
    print(f"{len(weights)} int8 weight matrices, element types {sorted(kinds)}; {nonzero} of {len(zero_points)} "
          "with a non-zero zero point")

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = default_intra_op_threads(), 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    for _ in range(args.runs):
        session.run(None, {"pixel_values": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    print(f"{args.runs} runs, {options.intra_op_num_threads} threads: {total / args.runs / 1000:.1f} ms of kernel "
          "time per view")
    for op, us in per_op.most_common(12):
        print(f"  {op:26s} {us / args.runs / 1000:6.2f} ms  {us / total:.0%}")


if __name__ == "__main__":
    main()
