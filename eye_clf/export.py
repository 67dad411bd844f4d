"""ONNX export: one graph from uint8 images to P(open), for onnxruntime without torch or eye_clf; GRAPH_DOC says
what it computes and holds."""
import json
from pathlib import Path

import torch
from torch import nn

from .files import atomic_write, sha256
from .models import fold_batchnorm, load_checkpoint
from .preprocess import IMG_SIZE, standardize

OPSET = 18
GRAPH_DOC = (f"The graph (opset {OPSET}) has one input ``images``, uint8 N x 24 x 24 (N dynamic, grayscale 0..255, "
             "already resized: see ``eye_clf.preprocess``), and one output ``p_open``, float32 N. Normalisation, the "
             "network, mirror averaging (when the checkpoint's preprocessing says tta), the temperature and the "
             "sigmoid are all inside. The model's metadata_props hold ``eye_clf.*`` entries: the checkpoint's "
             "sha256, format, model, preprocessing, config, metrics (JSON) and, when the checkpoint has one, the "
             "recommended ``threshold`` on P(open).")  # the graph's doc_string (kept here: python -OO drops __doc__)
META_KEYS = ("format", "model", "preprocessing", "config", "metrics", "threshold")


class ProbabilityGraph(nn.Module):
    """uint8 N x 24 x 24 -> P(open): what ``predict_proba`` computes after reading the images."""

    def __init__(self, model, tta):
        super().__init__()
        self.model, self.tta = model, tta

    def forward(self, images):
        x = standardize(images.float().unsqueeze(1))
        z = self.model(x)
        if self.tta:
            z = (z + self.model(x.flip(-1))) / 2
        return torch.sigmoid(z / self.model.temperature)


def export_onnx(checkpoint_path, out_path):
    """Write the ONNX graph of a checkpoint (see GRAPH_DOC) to ``out_path``; returns ``out_path``."""
    import onnx

    model, ckpt = load_checkpoint(checkpoint_path)
    fold_batchnorm(model)
    graph = ProbabilityGraph(model, model.tta).eval()
    example = torch.zeros(2, IMG_SIZE, IMG_SIZE, dtype=torch.uint8)
    program = torch.onnx.export(graph, (example,), input_names=["images"], output_names=["p_open"],
                                opset_version=OPSET, dynamic_shapes={"images": {0: torch.export.Dim("N")}},
                                dynamo=True, verbose=False)
    proto = program.model_proto
    for node in proto.graph.node:  # torch's debugging notes (source lines and this machine's paths): without them
        del node.metadata_props[:]  # the same checkpoint exports the same bytes, wherever and whenever it runs
    proto.producer_name = "eye_clf"
    proto.doc_string = GRAPH_DOC
    meta = {"eye_clf.checkpoint_sha256": sha256(checkpoint_path)}
    meta.update({f"eye_clf.{k}": json.dumps(ckpt[k], default=str) for k in META_KEYS if k in ckpt})
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto)
    atomic_write(out_path, lambda tmp: onnx.save(proto, tmp))
    return Path(out_path)
