"""Every notebook runs top to bottom in smoke mode (EYE_CLF_SMOKE=1: tiny subset, 1 epoch, outputs to a temp dir).

Executed in memory with the current interpreter as kernel, in the notebook's folder; never saved. Needs the data
folder (../shared/data or $EYE_CLF_DATA).
"""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ["dark", "blurry", "glasses", "unusual_angle", "inverted", "model_disagreement",
              "annotator_disagreement", "other"]
OUTPUTS = {  # notebook: the files its full run writes (smoke mode must leave them alone)
    "choose_method.ipynb": ["plots_checkpoints/comparison_two_methods.png", "results/choose_method.csv"],
    "train_model.ipynb": ["eye_clf/shipped/eye_clf.pt", "eye_clf/shipped/eye_clf.onnx", "runs/final"]
                         + [f"plots_checkpoints/{f}" for f in ("history.csv", "history.json",
                                                                "train_val_loss_metrics_history.png")],
    "for_readme/data_categories.ipynb": [f"for_readme/{c}.png" for c in CATEGORIES],
}


def snapshot(files):
    """mtime of each file (None when absent)."""
    return {f: (ROOT / f).stat().st_mtime_ns if (ROOT / f).exists() else None for f in files}


def changed_files():
    """The checkout's changed and untracked (not ignored) files, as git lists them; outside a git checkout (an
    unpacked source archive), every file's mtime, leaving out the caches and the virtual environment."""
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                       text=True)
    if r.returncode == 0:
        return r.stdout
    skip = {".venv", "__pycache__", ".pytest_cache", ".git"}
    files = (f for f in ROOT.rglob("*") if f.is_file() and not skip & set(f.relative_to(ROOT).parts))
    return {f: f.stat().st_mtime_ns for f in files}


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel spec for this interpreter, found first through $JUPYTER_PATH, whose temporary files go to this
    test's own folder (``$TMPDIR``), so that another test session on the machine does not share them."""
    spec = tmp_path / "jupyter" / "kernels" / "eye_clf_test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "eye_clf test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("EYE_CLF_SMOKE", "1")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    return "eye_clf_test"


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_committed_outputs_hold_no_machine_paths_or_widget_warnings(name):
    nb = nbformat.read(ROOT / name, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
    for bad in (str(ROOT), "/tmp/", "/root/", "IProgress not found", "TqdmWarning"):
        assert bad not in text, f"{name}: committed outputs contain {bad!r}"
    assert "provenance" in "".join(c.source for c in nb.cells)


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_committed_outputs_are_of_a_full_run_on_a_committed_tree(name):
    nb = nbformat.read(ROOT / name, as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "smoke mode: False" in text, f"{name}: the committed outputs are not those of a full run"
    assert "'git_dirty': False" in text, f"{name}: the committed outputs come from a tree with uncommitted changes"


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_notebook_runs_in_smoke_mode(name, kernel, tmp_path):
    path = ROOT / name
    nb = nbformat.read(path, as_version=4)
    before, tree = snapshot(OUTPUTS[name]), changed_files()
    NotebookClient(nb, timeout=1200, kernel_name=kernel,
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # raises on any cell error
    assert snapshot(OUTPUTS[name]) == before, "smoke mode must not touch committed outputs"
    assert changed_files() == tree, "smoke mode must write nothing into the checkout"
    assert not list((tmp_path / "tmp").glob("eye_clf_smoke_*")), "smoke mode must remove its temporary folder"
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "smoke mode: True" in text
