import json
import re
import runpy
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from eye_clf import metrics
from eye_clf.__main__ import main
from eye_clf.predict import predict_proba

from conftest import ATOL


def exit_message(argv):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code not in (0, None)
    return str(err.value.code)


def test_train(real_root, tmp_path, capsys):
    main(["train", "--data", str(real_root), "--limit", "120", "--epochs", "1", "--width", "8",
          "--weights", "none", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert re.search(r"trained eyenet/finetune \(weights: random init\) in \d+ s, 1 epochs", out)
    assert re.search(r"test +EER [\d.]+% .*accuracy [\d.]+% +AUC [\d.]+", out)
    ckpt = torch.load(tmp_path / "eye_clf.pt", weights_only=True)
    assert ckpt["config"]["width"] == 8 and ckpt["config"]["epochs"] == 1 and ckpt["config"]["weights"] is None
    assert {p.name for p in tmp_path.iterdir()} == {"eye_clf.pt", "history.csv", "history.json",
                                                   "train_val_loss_metrics_history.png"}


def test_predict_files_and_folders(labelled_folder, tiny_ckpt, tmp_path, capsys):
    folder, _, _, _ = labelled_folder
    one = folder / "005.png"
    out = tmp_path / "preds.csv"
    main(["predict", str(one), str(folder), "--checkpoint", str(tiny_ckpt), "--out", str(out)])
    df = pd.read_csv(out)
    assert list(df.columns) == ["file", "p_open"] and len(df) == 41
    assert df["file"].iloc[0] == str(one) and df["file"].iloc[1] == str(folder / "000.png")
    expected = predict_proba([str(one), folder], checkpoint=tiny_ckpt)
    assert np.allclose(df["p_open"], expected, atol=ATOL)
    assert "wrote 41 predictions" in capsys.readouterr().err
    main(["predict", str(one), "--checkpoint", str(tiny_ckpt)])  # CSV on standard output
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "file,p_open" and lines[1].startswith(f"{one},") and len(lines) == 2


def test_evaluate(labelled_folder, tiny_ckpt, capsys):
    folder, labels, _, targets = labelled_folder
    main(["evaluate", "--images", str(folder), "--labels", str(labels), "--checkpoint", str(tiny_ckpt)])
    out = capsys.readouterr().out
    m = metrics.summary(targets, predict_proba(folder, checkpoint=tiny_ckpt))
    assert out.startswith("40 images: ")
    assert f"EER {100 * m['eer']:.2f}%" in out and f"accuracy {100 * m['accuracy']:.2f}%" in out
    assert f"AUC {m['auc']:.4f}" in out


def test_cv(real_root, tmp_path, capsys):
    out = tmp_path / "cv.json"
    main(["cv", "--data", str(real_root), "--folds", "2", "--limit", "100", "--epochs", "1", "--width", "4",
          "--out", str(out)])
    printed = capsys.readouterr().out
    assert "2-fold CV (eyenet, weights: random init): eer" in printed
    result = json.loads(out.read_text())
    assert len(result["folds"]) == 2 and result["config"]["epochs"] == 1
    assert 0 <= result["pooled"]["eer"] <= 1


def test_bad_inputs_exit_with_a_clear_message(tmp_path, tiny_ckpt, labelled_folder):
    msg = exit_message(["predict", str(tmp_path / "missing.png"), "--checkpoint", str(tiny_ckpt)])
    assert msg.startswith("error: image not found") and "missing.png" in msg
    (tmp_path / "empty").mkdir()
    assert "no image files found" in exit_message(["predict", str(tmp_path / "empty")])
    (tmp_path / "fake.jpg").write_text("text")
    assert "not an image file" in exit_message(["predict", str(tmp_path / "fake.jpg"), "--checkpoint",
                                                str(tiny_ckpt)])
    folder, labels, _, _ = labelled_folder
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"img_name": ["000.png", "zzz.png"], "target": [1, 3]}).to_csv(bad, index=False)
    msg = exit_message(["evaluate", "--images", str(folder), "--labels", str(bad), "--checkpoint", str(tiny_ckpt)])
    assert "row 3 (zzz.png): target 3 is not 0 or 1" in msg and "image file not found" in msg
    assert "dataset not found" in exit_message(["train", "--data", str(tmp_path), "--epochs", "1"])
    assert "checkpoint not found" in exit_message(["predict", str(folder), "--checkpoint", str(tmp_path / "x.pt")])


def test_unknown_arch_is_rejected(real_root):
    assert "unknown arch 'vgg'" in exit_message(["cv", "--data", str(real_root), "--arch", "vgg", "--limit", "40",
                                                 "--folds", "2"])


@pytest.mark.filterwarnings("ignore:.*found in sys.modules")  # eye_clf.__main__ is imported above too
def test_module_entry_point(tmp_path, tiny_ckpt, monkeypatch):
    """``python -m eye_clf`` runs main(): a missing image exits with the message (status 1 for a string code)."""
    argv = ["eye_clf", "predict", str(tmp_path / "gone.png"), "--checkpoint", str(tiny_ckpt)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as err:
        runpy.run_module("eye_clf", run_name="__main__")
    assert isinstance(err.value.code, str) and err.value.code.startswith("error:") and "gone.png" in err.value.code
