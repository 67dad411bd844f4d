import json
import os
from pathlib import Path

import pandas as pd
import pytest

from eye_clf import files


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    files.atomic_write(path, lambda tmp: open(tmp, "w").write("new"))
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_all_replaces_none_when_one_writer_fails(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    first.write_text("old a")

    def broken(tmp):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write_all([(first, lambda tmp: open(tmp, "w").write("new a")), (second, broken)])
    assert first.read_text() == "old a" and sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "sub"]
    files.atomic_write_all([(first, lambda tmp: open(tmp, "w").write("new a")),
                            (second, lambda tmp: open(tmp, "w").write("new b"))])
    assert (first.read_text(), second.read_text()) == ("new a", "new b")


def test_atomic_write_through_a_symlink_replaces_the_file_it_points_to(tmp_path):
    real, link = tmp_path / "real.txt", tmp_path / "link.txt"
    real.write_text("old")
    link.symlink_to(real)
    files.atomic_write(link, lambda tmp: open(tmp, "w").write("new"))
    assert link.is_symlink() and real.read_text() == "new"


def test_a_new_file_gets_the_umask_mode_without_the_umask_being_changed(tmp_path, monkeypatch):
    import os
    import sys
    old = os.umask(0o027)
    try:
        if sys.platform == "linux":  # elsewhere reading the umask has to set it for a moment
            monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("the umask was set"))
        files.atomic_write(tmp_path / "new.txt", lambda tmp: open(tmp, "w").close())
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640


def test_save_history(tmp_path):
    history = [dict(epoch=1, train_loss=0.5, val_loss=0.4), dict(epoch=2, train_loss=0.3, val_loss=0.45)]
    files.save_history(history, tmp_path / "h")
    assert pd.read_csv(tmp_path / "h.csv").to_dict("records") == history
    assert json.loads((tmp_path / "h.json").read_text()) == history


def test_provenance_names_the_commit_versions_and_machine():
    prov = files.provenance()
    assert len(prov["git_commit"]) == 40 and isinstance(prov["git_dirty"], bool)
    assert prov["versions"]["numpy"] and prov["machine"]["cpu_count"] >= 1
    assert isinstance(prov["machine"]["cpu"], str)


def test_provenance_names_the_instruction_set_of_torchs_cpu_kernels():
    """Two CPU trainings agree bit for bit only where torch picks the same kernels (AVX2 vs AVX512, ...)."""
    import torch
    machine = files.provenance("cpu")["machine"]
    assert machine["device"] == "cpu" and machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["cpu_capability"]  # e.g. "AVX2"


def test_provenance_names_no_commit_for_a_copy_inside_another_repository(tmp_path):
    """Vendored into another project's git tree, the package's results must not claim that project's commit."""
    import shutil
    import subprocess
    import sys
    shutil.copytree(Path(files.__file__).parent, tmp_path / "vendor" / "eye_clf")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "my-app"\n')  # another project's
    shutil.copytree(Path(files.__file__).parent, tmp_path / "eye_clf")  # vendored at its root too
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "other project"], check=True)
    for where in (tmp_path / "vendor", tmp_path):
        code = "from eye_clf import files; print(files.provenance()['git_commit'])"
        out = subprocess.run([sys.executable, "-c", code],
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(where)}, capture_output=True, text=True)
        assert out.stdout.split() == ["None"], (where, out.stderr)


def test_provenance_records_the_device_a_result_was_computed_on(monkeypatch):
    import torch
    assert files.provenance("cpu")["machine"]["device"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA machine: a CPU result still says cpu
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Some GPU")
    assert files.provenance(torch.device("cpu"))["machine"]["device"] == "cpu"
    assert files.provenance()["machine"]["device"] == "Some GPU"


def test_provenance_says_whether_tracked_files_changed(tmp_path, monkeypatch):
    import subprocess
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    monkeypatch.setattr(files, "checkout", lambda: tmp_path.resolve())
    assert files.provenance()["git_dirty"] is False
    (tmp_path / "notes.txt").write_text("untracked files do not count")
    assert files.provenance()["git_dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert files.provenance()["git_dirty"] is True


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("old")
    path.chmod(0o600)  # private labels stay private after a save
    files.atomic_write(path, lambda tmp: Path(tmp).write_text("new"))
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600


def test_a_lock_taken_through_a_symlink_is_the_real_files_lock(tmp_path):
    real, link = tmp_path / "labels.xlsx", tmp_path / "link.xlsx"
    real.write_text("x")
    link.symlink_to(real)
    with files.locked(link):
        with pytest.raises(files.LockTimeout):
            with files.locked(real, timeout=0.01):
                pass
