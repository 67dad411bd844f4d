import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from eye_clf import data, export, models
from eye_clf.__main__ import main
from eye_clf.predict import DEFAULT_CHECKPOINT, DEFAULT_ONNX, onnx_metadata, predict_proba, recommended_threshold

from conftest import ATOL, synthetic

PARITY = 1e-4  # max |P_torch - P_onnx|


@pytest.fixture(scope="module")
def tta_ckpt(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint with mirror averaging on and a recommended threshold, as the lead's retraining adds."""
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["preprocessing"]["tta"] = True
    ckpt["threshold"] = 0.42
    path = tmp_path_factory.mktemp("tta") / "tta.pt"
    torch.save(ckpt, path)
    return path


def test_export_is_the_whole_prediction(tta_ckpt, tmp_path):
    out = export.export_onnx(tta_ckpt, tmp_path / "m.onnx")
    images, _ = synthetic(37, seed=4)
    expected = predict_proba(images, checkpoint=tta_ckpt)  # torch, with the checkpoint's mirror averaging
    assert not np.allclose(expected, predict_proba(images, checkpoint=tta_ckpt, tta=False), atol=1e-4)
    for batch_size in (1, 7, 1024):  # the batch dimension is dynamic
        assert np.abs(predict_proba(images, checkpoint=out, batch_size=batch_size) - expected).max() <= PARITY

    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["images"] and [o.name for o in proto.graph.output] == ["p_open"]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert proto.opset_import[0].version == export.OPSET
    meta = onnx_metadata(out)
    assert meta["checkpoint_sha256"] == export.sha256(tta_ckpt)
    assert meta["threshold"] == 0.42 and meta["preprocessing"]["tta"] is True
    assert meta["config"]["width"] == 4 and "metrics" in meta and meta["format"] == models.CHECKPOINT_FORMAT


def test_recommended_threshold_reads_the_checkpoint_or_its_export(tta_ckpt, tiny_ckpt, tmp_path):
    out = export.export_onnx(tta_ckpt, tmp_path / "m.onnx")
    assert recommended_threshold(tta_ckpt) == recommended_threshold(out) == 0.42
    assert recommended_threshold(tiny_ckpt) is None  # it records none: the caller decides (0.5)
    shipped = torch.load(DEFAULT_CHECKPOINT, weights_only=True)["threshold"]
    assert recommended_threshold() == recommended_threshold(DEFAULT_CHECKPOINT) == pytest.approx(shipped, abs=1e-12)
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nowhere.pt"):
        recommended_threshold(tmp_path / "nowhere.pt")


def test_export_command(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    main(["export", "--checkpoint", str(tiny_ckpt), "--out", str(out)])
    assert f"wrote {out} (ONNX opset {export.OPSET})" in capsys.readouterr().out
    assert "threshold" not in onnx_metadata(out)  # only when the checkpoint has one
    images, _ = synthetic(20, seed=6)
    assert np.abs(predict_proba(images, checkpoint=out) - predict_proba(images, checkpoint=tiny_ckpt)).max() <= PARITY


def test_export_under_python_optimize_2(tiny_ckpt, tmp_path):
    """``python -OO`` drops docstrings; the graph's doc_string does not come from one."""
    out = tmp_path / "oo.onnx"
    subprocess.run([sys.executable, "-OO", "-m", "eye_clf", "export", "--checkpoint", str(tiny_ckpt), "--out",
                    str(out)], check=True, capture_output=True)
    assert onnx.load(str(out)).doc_string == export.GRAPH_DOC


def test_export_refuses_a_bad_checkpoint(tiny_ckpt, tmp_path):
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["state_dict"]["temperature"] = torch.tensor(-1.0)
    torch.save(ckpt, tmp_path / "neg.pt")
    with pytest.raises(SystemExit, match=r"error: .*neg.pt: temperature -1.0 is not > 0"):
        main(["export", "--checkpoint", str(tmp_path / "neg.pt"), "--out", str(tmp_path / "neg.onnx")])
    assert not (tmp_path / "neg.onnx").exists()


def test_export_names_what_is_wrong_with_its_files(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from eye_clf import __main__ as cli
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(cli, "SHIPPED", shipped)  # a stand-in: a regression must not touch the real one
    run = tmp_path / "run"
    run.mkdir()
    (run / "eye_clf.pt").write_bytes(tiny_ckpt.read_bytes())
    onnx_file = export.export_onnx(tiny_ckpt, tmp_path / "m.onnx")
    for argv, message in [
            (["--out", str(shipped / "eye_clf.onnx")], r"--out: .*shipped/eye_clf.onnx is in .*shipped, a folder of "
                                                       r"the shipped model .* `eye-clf ship RUN_FOLDER`; write it"),
            (["--out", str(tmp_path / "m.pt")], r"m.pt: the file is an ONNX model; give it a .onnx name"),
            (["--checkpoint", str(run)], rf"checkpoint: {run} is a folder, not a model file; the run's model is "
                                         rf"{run / 'eye_clf.pt'}$"),
            (["--checkpoint", str(onnx_file)], r"m.onnx is an ONNX graph; this needs a .pt checkpoint"),
            (["--checkpoint", str(tmp_path / "nowhere.pt")], r"^error: checkpoint not found: .*nowhere.pt$")]:
        argv = ["export", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "x.onnx"), *argv]
        with pytest.raises(SystemExit) as exit:
            main(argv)
        said = capsys.readouterr().err.strip() if exit.value.code == 2 else exit.value.code  # argparse's or ours
        assert re.search(message, said.splitlines()[-1]), said
    assert not list(shipped.iterdir()) and not (tmp_path / "x.onnx").exists()


# ---- the shipped ONNX model --------------------------------------------------------------------------------

def test_shipped_onnx_comes_from_the_shipped_checkpoint():
    meta = onnx_metadata(DEFAULT_ONNX)
    ckpt = torch.load(DEFAULT_CHECKPOINT, weights_only=True)
    assert meta["checkpoint_sha256"] == export.sha256(DEFAULT_CHECKPOINT), \
        "re-export: python -c 'from eye_clf.export import export_onnx; from eye_clf.predict import " \
        "DEFAULT_CHECKPOINT as C, DEFAULT_ONNX as O; export_onnx(C, O)'"
    assert meta["preprocessing"] == ckpt["preprocessing"] and meta.get("threshold") == ckpt.get("threshold")
    images = np.random.default_rng(0).integers(0, 256, (64, 24, 24), dtype=np.uint8)
    torch_p, onnx_p = (predict_proba(images, backend=b) for b in ("torch", "onnx"))
    logit = np.log(torch_p) - np.log1p(-torch_p)  # noise looks closed: P(open) is small, its logit still varies
    assert np.abs(torch_p - onnx_p).max() <= PARITY and logit.std() > 0.1


def test_the_shipped_onnx_is_byte_for_byte_the_export_of_the_shipped_checkpoint(tmp_path):
    """Export is reproducible (no source paths or lines in the graph), so the shipped file is checked whole: a
    changed byte of it, or an export by other code, fails here."""
    again = export.export_onnx(DEFAULT_CHECKPOINT, tmp_path / "again.onnx")
    assert again.read_bytes() == DEFAULT_ONNX.read_bytes(), "re-export the shipped ONNX (see the test above)"
    graph = onnx.load(again).graph
    assert not any(node.metadata_props for node in graph.node)
    assert str(data.REPO_ROOT).encode() not in again.read_bytes()


def test_shipped_onnx_parity_on_real_images(real_root):
    files = data.list_images(real_root / "EyesDataset")[::20]  # 200 of the 4000
    torch_p, onnx_p = (predict_proba(files, backend=b) for b in ("torch", "onnx"))
    assert np.abs(torch_p - onnx_p).max() <= max(PARITY, ATOL)  # the torch backend runs on CUDA when present


def test_readme_onnxruntime_example_runs_without_eye_clf_or_torch(real_root, tmp_path):
    readme = (data.REPO_ROOT / "README.md").read_text()
    code = re.search(r"<!-- onnx-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert "eye_clf" not in code.replace("eye_clf.onnx", "") and len(code.strip().splitlines()) == 4
    blocker = ("import sys\nclass Block:\n    def find_spec(self, name, *args):\n"
               "        if name.split('.')[0] in ('torch', 'eye_clf'):\n            raise ImportError(name)\n"
               "sys.meta_path.insert(0, Block())\n")
    files = data.list_images(real_root / "EyesDataset")[:8]
    for f in [DEFAULT_ONNX, *files]:  # the example's working folder: the model and some eye images
        (tmp_path / f.name).symlink_to(f)
    for f, size in zip(files[:2], [(40, 30), (17, 17)]):  # and crops of other sizes, which it resizes as eye_clf does
        Image.open(f).resize(size, Image.BICUBIC).save(tmp_path / f"resized_{f.name}", quality=95)
    files = sorted(tmp_path.glob("*.jpg"))
    out = subprocess.run([sys.executable, "-c", blocker + code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert np.abs(np.array(eval(out.stdout)) - predict_proba(files, backend="onnx")).max() <= 1e-6


def test_readme_figures_for_blank_and_noise_inputs_come_from_its_example():
    readme = (data.REPO_ROOT / "README.md").read_text()
    prose, code = re.search(r"gets P\(open\) (.*?)\n\n<!-- blank-example -->\n```python\n(.*?)```", readme,
                            re.S).groups()
    printed = []
    exec(code, {"print": lambda p: printed.append(np.atleast_1d(p))})
    said = [float(v) for v in re.findall(r"\d\.\d+", prose)]
    assert said == [round(float(v), 3) for v in np.concatenate(printed)]  # uniform 0, 255, 128, then the noise maximum


def test_not_an_eye_results_and_readme_figures_are_what_the_script_prints_now(capsys):
    import runpy
    runpy.run_path(str(data.REPO_ROOT / "scripts" / "not_an_eye.py"), run_name="__main__")
    printed = capsys.readouterr().out.splitlines()[1:]  # after the provenance line
    assert printed == (data.REPO_ROOT / "results" / "not_an_eye.txt").read_text().splitlines()[1:]
    text = "\n".join(printed)
    closed = re.findall(r"jpg.*max (\d\.\d+); called closed: (\d+)%", text)  # the two photos' crops
    portrait = float(re.search(r"whole portrait.*P\(open\) (\d\.\d+)", text).group(1))
    eyes = [float(v) for pair in re.findall(r"P\(open\) (\d\.\d+) and (\d\.\d+)", text) for v in pair]
    readme = " ".join((data.REPO_ROOT / "README.md").read_text().split())
    assert (f"{closed[0][1]} and {closed[1][1]} are called closed; the other {100 - int(closed[0][1])} and "
            f"{100 - int(closed[1][1])} are called open, with P(open) up to {float(closed[0][0]):.2f} and "
            f"{float(closed[1][0]):.2f}") in readme
    assert f"gets {portrait:.3f}, while square crops" in readme and f"get {min(eyes):.2f} to {max(eyes):.2f}" in readme
