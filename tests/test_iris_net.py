"""The iris_net arch (MediaPipe's iris-landmark network) and scripts/iris_weights.py, its weights' converter."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import tflite
import torch
import torch.nn.functional as F

from eye_clf import data
from eye_clf.models import IrisBlock, IrisNet, build_model

from conftest import capture_backbone_input

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("iris_weights", ROOT / "scripts" / "iris_weights.py")
iris_weights = importlib.util.module_from_spec(spec)
spec.loader.exec_module(iris_weights)


def random_state(seed=0):
    """IrisNet's state dict with every tensor random (PReLU slopes too), so a misplaced one shows."""
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) * 0.1 for k, v in IrisNet().state_dict().items()}


def test_iris_net_gives_one_logit_per_image_from_the_eye_at_64_px():
    model = build_model("iris_net").eval()
    assert model.input_size == 64 and model.head.in_features == 256
    with torch.no_grad():
        z = model(torch.randn(3, 1, 24, 24))
    assert z.shape == (3,) and torch.isfinite(z).all()


def test_iris_net_refuses_imagenet_weights_and_names_where_its_own_come_from():
    with pytest.raises(ValueError, match="iris_net has no ImageNet weights: .*scripts/iris_weights.py"):
        build_model("iris_net", weights="imagenet")


def test_missing_iris_weights_name_the_script_that_writes_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"weights: .*iris\.pt not found: scripts/iris_weights.py writes it"):
        build_model("iris_net", weights=tmp_path / "iris.pt")


def test_a_halving_block_adds_its_path_to_the_max_pooled_input_padded_with_zero_channels():
    torch.manual_seed(0)
    block = IrisBlock(2, 4, mid=3, stride=2).eval()
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        path = block.expand(block.depthwise(block.act_mid(block.reduce(x))))
        shortcut = torch.cat([F.max_pool2d(x, 2), torch.zeros(1, 2, 2, 2)], 1)
        assert torch.allclose(block(x), block.act(path + shortcut))
    assert block.reduce.kernel_size == (2, 2) and block.reduce.stride == (2, 2)


def test_weights_load_and_the_gray_eye_is_seen_as_the_rgb_crop_the_network_was_trained_on(tmp_path):
    state = random_state()
    torch.save(state, tmp_path / "iris.pt")
    model = build_model("iris_net", weights=tmp_path / "iris.pt").eval()
    assert torch.allclose(model.backbone.stem.weight, state["stem.weight"].sum(1, keepdim=True))
    assert torch.equal(model.backbone.state_dict()["branches.1.7.expand.bias"], state["branches.1.7.expand.bias"])
    reference = IrisNet().eval()
    reference.load_state_dict(state)
    pixels = torch.rand(2, 1, 24, 24)
    up = F.interpolate(pixels, size=64, mode="bilinear", align_corners=False)
    assert torch.allclose(capture_backbone_input(model, (pixels - data.MEAN) / data.STD), up, atol=1e-5)  # 0..1
    with torch.no_grad():
        assert torch.allclose(model.backbone(up), reference(up.expand(-1, 3, -1, -1)), atol=1e-4)


# ---- the converter, on a tflite file written here in MediaPipe's layout ---------------------------------------

CODES = {name: getattr(tflite.BuiltinOperator, name)
         for name in ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD")}


class Graph:
    """Ops and tensors of a tflite graph (constants in TensorFlow's layouts), written out with ``save``."""

    def __init__(self):
        self.tensors, self.ops = [None], []  # tensor 0: the input

    def const(self, array, dtype=np.float32):
        self.tensors.append(np.ascontiguousarray(array, dtype))
        return len(self.tensors) - 1

    def op(self, name, *inputs, into=None):
        self.tensors.append(None)
        (self.ops if into is None else into).append((name, list(inputs), len(self.tensors) - 1))
        return len(self.tensors) - 1

    def save(self, path):
        b = flatbuffers.Builder(0)

        def vector(start, items, prepend):
            start(b, len(items))
            for item in reversed(items):
                prepend(item)
            return b.EndVector()

        buffers, tensors = [], []
        for i, array in enumerate(self.tensors):
            data = b.CreateNumpyVector(np.frombuffer(array.tobytes(), np.uint8)) if array is not None else None
            tflite.BufferStart(b)
            if data is not None:
                tflite.BufferAddData(b, data)
            buffers.append(tflite.BufferEnd(b))
            shape = vector(tflite.TensorStartShapeVector, list(array.shape if array is not None else (1,)),
                           b.PrependInt32)
            tflite.TensorStart(b)
            tflite.TensorAddType(b, tflite.TensorType.INT8 if array is not None and array.dtype == np.int8 else
                                 tflite.TensorType.FLOAT32)
            tflite.TensorAddShape(b, shape)
            tflite.TensorAddBuffer(b, i)
            tensors.append(tflite.TensorEnd(b))
        codes = []
        for code in CODES.values():
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            codes.append(tflite.OperatorCodeEnd(b))
        ops = []
        for name, inputs, output in self.ops:
            ins = vector(tflite.OperatorStartInputsVector, inputs, b.PrependInt32)
            outs = vector(tflite.OperatorStartOutputsVector, [output], b.PrependInt32)
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, list(CODES).index(name))
            tflite.OperatorAddInputs(b, ins)
            tflite.OperatorAddOutputs(b, outs)
            ops.append(tflite.OperatorEnd(b))
        tensors_v = vector(tflite.SubGraphStartTensorsVector, tensors, b.PrependUOffsetTRelative)
        ops_v = vector(tflite.SubGraphStartOperatorsVector, ops, b.PrependUOffsetTRelative)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors_v)
        tflite.SubGraphAddOperators(b, ops_v)
        graph = tflite.SubGraphEnd(b)
        graphs = vector(tflite.ModelStartSubgraphsVector, [graph], b.PrependUOffsetTRelative)
        codes_v = vector(tflite.ModelStartOperatorCodesVector, codes, b.PrependUOffsetTRelative)
        buffers_v = vector(tflite.ModelStartBuffersVector, buffers, b.PrependUOffsetTRelative)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddSubgraphs(b, graphs)
        tflite.ModelAddOperatorCodes(b, codes_v)
        tflite.ModelAddBuffers(b, buffers_v)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        Path(path).write_bytes(b.Output())


def mediapipe_like(state, path, branch_blocks=8):
    """Write IrisNet's ``state`` as MediaPipe lays out iris_landmark.tflite: the trunk's ops, then the two branches'
    interleaved op by op, each ending in a landmark head (a 2x2 conv); ``branch_blocks`` blocks per branch."""
    g = Graph()
    conv = lambda key, x, into=None: g.op("CONV_2D", x, g.const(state[f"{key}.weight"].permute(0, 2, 3, 1)),
                                          g.const(state[f"{key}.bias"]), into=into)
    depthwise = lambda key, x, into: g.op("DEPTHWISE_CONV_2D", x, g.const(state[f"{key}.weight"].permute(1, 2, 3, 0)),
                                          g.const(state[f"{key}.bias"]), into=into)
    prelu = lambda key, x, into=None: g.op("PRELU", x, g.const(state[f"{key}.weight"].view(1, 1, -1)), into=into)

    def block(key, x, halves, into):
        y = conv(f"{key}.expand", depthwise(f"{key}.depthwise", prelu(f"{key}.act_mid", conv(f"{key}.reduce", x, into),
                                                                       into), into), into)
        if halves:
            x = g.op("PAD", g.op("MAX_POOL_2D", x, into=into), g.const(np.zeros((4, 2))), into=into)
        return prelu(f"{key}.act", g.op("ADD", x, y, into=into), into)

    x = prelu("stem_act", conv("stem", 0))
    for i in range(10):
        x = block(f"trunk.{i}", x, i in (4, 9), g.ops)
    branches = [[], []]
    for b, ops in enumerate(branches):
        y = x
        for i in range(branch_blocks):
            y = block(f"branches.{b}.{i}", y, i in (2, 5), ops)
        g.op("CONV_2D", y, g.const(np.random.randn(15, 2, 2, 128)), g.const(np.zeros(15)), into=ops)
    g.ops += [op for pair in zip(*branches) for op in pair]
    g.save(path)


def test_converter_puts_every_tflite_weight_where_irisnet_has_it(tmp_path):
    state = random_state(1)
    mediapipe_like(state, tmp_path / "iris.tflite")
    converted = iris_weights.convert(tmp_path / "iris.tflite")
    assert converted.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(converted[k], v), k


def test_converter_names_the_part_that_does_not_fit(tmp_path):
    mediapipe_like(random_state(), tmp_path / "short.tflite", branch_blocks=7)
    with pytest.raises(ValueError, match=r"short.tflite: \d+ tensors for the branch 0, IrisNet has \d+"):
        iris_weights.convert(tmp_path / "short.tflite")


def test_converter_names_a_quantized_tensor(tmp_path):
    g = Graph()
    g.op("CONV_2D", 0, g.const(np.zeros((4, 3, 3, 3)), np.int8), g.const(np.zeros(4)))
    g.save(tmp_path / "int8.tflite")
    with pytest.raises(ValueError, match=r"int8.tflite: tensor 1 is not float32 \(a quantized model\?\)"):
        iris_weights.convert(tmp_path / "int8.tflite")


def run_script(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "iris_weights.py"), *map(str, args)],
                          capture_output=True, text=True, env=env)


def test_the_converter_script_names_a_file_that_is_no_tflite_model_and_writes_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    out = run_script(tmp_path / "notes.txt", tmp_path / "w.pt")
    assert out.returncode == 2 and "notes.txt is not a TensorFlow Lite model" in out.stderr
    missing = run_script(tmp_path / "gone.tflite", tmp_path / "w.pt")
    assert missing.returncode == 2 and "gone.tflite" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "w.pt").exists()


def test_check_without_ai_edge_litert_says_to_install_it_and_writes_nothing(tmp_path):
    mediapipe_like(random_state(), tmp_path / "iris.tflite")
    shadow = tmp_path / "shadow" / "ai_edge_litert"  # found first on the path, and not importable
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError('ai_edge_litert', name='ai_edge_litert')")
    out = run_script(tmp_path / "iris.tflite", tmp_path / "w.pt", "--check",
                     env={**os.environ, "PYTHONPATH": str(shadow.parent)})
    assert out.returncode == 2 and "--check runs the tflite model with the ai-edge-litert package" in out.stderr
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.skipif(not os.environ.get("EYE_CLF_IRIS_TFLITE"), reason="set EYE_CLF_IRIS_TFLITE to MediaPipe's "
                    "iris_landmark.tflite (see scripts/iris_weights.py) to check the real file")
def test_the_real_mediapipe_file_converts_and_matches_its_tflite_outputs():
    path = Path(os.environ["EYE_CLF_IRIS_TFLITE"])
    state = iris_weights.convert(path)
    assert state.keys() == IrisNet().state_dict().keys()
    pytest.importorskip("ai_edge_litert")
    assert iris_weights.check(path, state) < 1e-4
