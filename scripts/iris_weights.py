"""Convert MediaPipe's iris-landmark model (iris_landmark.tflite, Apache-2.0) into a state dict for the ``iris_net``
arch (eye_clf.models.IrisNet), its two landmark heads left out.

    pip download --no-deps mediapipe==0.10.14 -d wheels    # the last release whose wheel ships the file
    unzip -j wheels/mediapipe-0.10.14-*.whl 'mediapipe/modules/iris_landmark/iris_landmark.tflite' -d wheels
    python scripts/iris_weights.py wheels/iris_landmark.tflite runs/iris_net.pt
    python scripts/iris_weights.py wheels/iris_landmark.tflite runs/iris_net.pt --check   # needs ai-edge-litert

The file's tensors are read with the ``tflite`` package (its FlatBuffers schema; no TensorFlow). The ops come in
dataflow order: the trunk's, then the two branches' interleaved (the eye contour's first). Each parameter is matched
to the next one of IrisNet's in registration order, shapes checked, from TensorFlow's NHWC layout.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from eye_clf.files import atomic_write
from eye_clf.models import IrisNet

PARAMETRIC = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "PRELU": "prelu"}


def tflite_parameters(path):
    """[(branch, kind, [constant arrays], input tensor)] of the file's conv, depthwise and PReLU ops in order; branch
    is None for the shared trunk, else 0, 1, ... in the order the branches begin (a conv reading a tensor that another
    conv reads too starts one; every op after it that reads its outputs belongs to it). A ValueError names a file
    that is no float32 TensorFlow Lite model."""
    import tflite

    buf = Path(path).read_bytes()
    if not tflite.Model.ModelBufferHasIdentifier(buf, 0):
        raise ValueError(f"{path} is not a TensorFlow Lite model (no TFL3 identifier)")
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph, names = model.Subgraphs(0), {v: k for k, v in vars(tflite.BuiltinOperator).items() if k.isupper()}
    ops = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        ops.append((names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())],
                    [int(i) for i in op.InputsAsNumpy() if i >= 0], [int(i) for i in op.OutputsAsNumpy()]))
    conv_reads = [ins[0] for name, ins, _ in ops if name == "CONV_2D"]
    forks = {t for t in conv_reads if conv_reads.count(t) > 1}

    def array(i):
        t = graph.Tensors(i)
        if t.Type() != tflite.TensorType.FLOAT32:
            raise ValueError(f"{path}: tensor {i} is not float32 (a quantized model?); the converter reads float32")
        return np.frombuffer(model.Buffers(t.Buffer()).DataAsNumpy().tobytes(), np.float32).reshape(t.ShapeAsNumpy())

    branch_of, started, out = {}, 0, []
    for name, ins, outs in ops:
        if name == "CONV_2D" and ins[0] in forks:
            branch, started = started, started + 1
        else:
            branch = max((branch_of[i] for i in ins if branch_of.get(i) is not None), default=None)
        branch_of.update(dict.fromkeys(outs, branch))
        if name in PARAMETRIC:
            out.append((branch, PARAMETRIC[name], [array(i) for i in ins[1:]], ins[0]))
    return out


def to_torch(kind, arrays):
    """One op's constants in PyTorch's layout: conv OHWI -> OIHW, depthwise 1HWC -> C1HW, PReLU 11C -> C."""
    if kind == "prelu":
        return [torch.from_numpy(arrays[0].reshape(-1).copy())]
    w = arrays[0].transpose(0, 3, 1, 2) if kind == "conv" else arrays[0].transpose(3, 0, 1, 2)
    return [torch.from_numpy(np.array(w)), torch.from_numpy(arrays[1].copy())]


def convert(path):
    """IrisNet's state dict from the tflite file at ``path``; a ValueError names a parameter that does not fit."""
    ops, own = tflite_parameters(path), IrisNet().state_dict()
    groups = {None: [k for k in own if not k.startswith("branches.")]}
    groups.update({b: [k for k in own if k.startswith(f"branches.{b}.")] for b in (0, 1)})
    state = {}
    for branch, keys in groups.items():
        tensors = [t for b, kind, arrays, _ in ops if b == branch for t in to_torch(kind, arrays)]
        if branch is not None:  # the landmark head (a conv's weight and bias) ends each branch
            tensors = tensors[:-2]
        if len(tensors) != len(keys):
            part = "trunk" if branch is None else f"branch {branch}"
            raise ValueError(f"{path}: {len(tensors)} tensors for the {part}, IrisNet has {len(keys)}")
        for k, t in zip(keys, tensors):
            if t.shape != own[k].shape:
                raise ValueError(f"{path}: {k} is {tuple(t.shape)} there, IrisNet's is {tuple(own[k].shape)}")
            state[k] = t
    return state


def check(path, state, n=8):
    """Largest absolute difference between IrisNet's branch features and the tflite model's (the inputs of its
    landmark heads, averaged over their 2x2 positions) on ``n`` random 64x64 RGB crops; needs ai-edge-litert."""
    from ai_edge_litert.interpreter import Interpreter

    heads = {b: source for b, kind, _, source in tflite_parameters(path) if b is not None and kind == "conv"}
    interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    net = IrisNet().eval()
    net.load_state_dict(state)
    x = np.random.default_rng(0).random((n, 64, 64, 3), dtype=np.float32)
    theirs = []
    for image in x:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        theirs.append(np.concatenate([interpreter.get_tensor(heads[b])[0].mean((0, 1)) for b in sorted(heads)]))
    with torch.no_grad():
        ours = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    return float(np.abs(ours - np.stack(theirs)).max())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tflite", type=Path, help="MediaPipe's iris_landmark.tflite")
    p.add_argument("out", type=Path, help="the state dict to write (.pt)")
    p.add_argument("--check", action="store_true", help="compare IrisNet's features with the tflite model's on "
                   "random crops (needs the ai-edge-litert package)")
    args = p.parse_args()
    if args.check:
        try:
            import ai_edge_litert  # noqa: F401
        except ModuleNotFoundError:
            p.error("--check runs the tflite model with the ai-edge-litert package: pip install it")
    try:
        state = convert(args.tflite)
    except (OSError, ValueError) as err:
        p.error(str(err))
    atomic_write(args.out, lambda f: torch.save(state, f))
    print(f"{args.out}: {len(state)} tensors, {sum(v.numel() for v in state.values())} weights")
    if args.check:
        print(f"largest |IrisNet - tflite| over the branch features of 8 random crops: {check(args.tflite, state):.2g}")


if __name__ == "__main__":
    main()
