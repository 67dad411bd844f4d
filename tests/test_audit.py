"""Label audit: cleanlab ranking on out-of-fold P(open), the review list, and the CLI (with and without training)."""
import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eye_clf import data
from eye_clf.__main__ import main
from eye_clf.audit import audit, labeled, load_images, read_oof, review_list
from eye_clf.data import LabelError
from eye_clf.labels_store import LabelStore
from eye_clf.studio import Studio, read_review
from eye_clf.train import ConfigError, TrainConfig
from test_studio import eye


def test_review_list_finds_flipped_labels_first():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 300)
    p_open = np.clip(np.where(truth == 1, 0.9, 0.1) + rng.normal(0, 0.05, 300), 0.01, 0.99)
    flipped = rng.choice(300, 12, replace=False)
    given = truth.copy()
    given[flipped] ^= 1
    names = [f"{i:03d}.png" for i in range(300)]
    review = review_list(names, given, p_open)
    found = set(review["img_name"])
    assert found <= {names[i] for i in flipped} and len(found) >= 11  # confident learning may keep a borderline one
    assert list(review["rank"]) == list(range(1, len(found) + 1)) and review["score"].is_monotonic_increasing
    row = review.iloc[0]
    i = names.index(row["img_name"])
    assert row["target"] == given[i] and row["p_open"] == p_open[i]
    assert row["score"] == pytest.approx(p_open[i] if given[i] else 1 - p_open[i])


@pytest.fixture
def partly_labelled_xlsx(tmp_path):
    """40 synthetic eyes and an xlsx where one label is wrong, one row unlabelled and one skipped as unsure."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        eye(i % 2, i).save(images / f"{i:03d}.png")
    targets = [i % 2 for i in range(40)]
    targets[3] = 0  # a wrong label: 003.png shows an open eye
    df = pd.DataFrame({"img_name": [f"{i:03d}.png" for i in range(40)], "target": targets})
    df.loc[38, "target"] = None                       # not labeled yet
    df["unsure"] = 0
    df.loc[39, ["target", "unsure"]] = [None, 1]      # skipped as unsure
    df.to_excel(tmp_path / "labels.xlsx", index=False)
    return images, tmp_path / "labels.xlsx"


def test_only_labeled_rows_are_audited(partly_labelled_xlsx):
    images, labels = partly_labelled_xlsx
    y, names = labeled(images, labels)
    assert load_images(images, names).shape == (38, 24, 24) and len(y) == 38 and names[-1] == "037.png"
    (images / "010.png").unlink()
    (images / "038.png").unlink()  # not labeled yet: its image may be missing
    with pytest.raises(LabelError, match=r"1 bad row.*\n  row 12 \(010.png\): image file not found"):
        labeled(images, labels)


def test_audit_refuses_soft_labels_and_distillation_before_any_work(tmp_path):
    for cfg, says in ((TrainConfig(soft_labels=True), "soft_labels: the audit judges the labels file alone"),
                      (TrainConfig(distill=0.5), "distill: the audit's CV trains no teachers")):
        with pytest.raises(ConfigError, match=says):
            audit(tmp_path / "no_images", tmp_path / "no_labels.xlsx", cfg=cfg)


def test_read_oof_checks_its_input(tmp_path):
    path = tmp_path / "oof.csv"
    pd.DataFrame({"img_name": ["a", "b"], "p_open": [0.2, 1.5]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"0\.\.1; 1 is not, e\.g\. row 3 \(b\): 1\.5"):
        read_oof(path, ["a", "b"])
    with pytest.raises(ValueError, match="no p_open for 1"):
        read_oof(path, ["a", "c"])
    pd.DataFrame({"img_name": ["a"], "p": [0.2]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="needs columns"):
        read_oof(path, ["a"])
    pd.DataFrame({"img_name": ["a", "b", "a"], "p_open": [0.2, 0.5, 0.3]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"oof.csv: 2 bad row\(s\):\n  row 2 \(a\): duplicate img_name"):
        read_oof(path, ["a", "b"])


def test_audit_cli_with_given_oof_feeds_the_studio(partly_labelled_xlsx, tmp_path, capsys, monkeypatch):
    images, labels = partly_labelled_xlsx
    oof = tmp_path / "oof.csv"
    pd.DataFrame({"img_name": [f"{i:03d}.png" for i in range(38)],
                  "p_open": [0.95 if i % 2 else 0.05 for i in range(38)]}).to_csv(oof, index=False)
    monkeypatch.setattr(data, "load_image", lambda *a: pytest.fail("--oof trains nothing: no image is read"))
    main(["audit", "--images", str(images), "--labels", str(labels), "--oof", str(oof),
          "--out", str(tmp_path / "review.csv")])
    out = capsys.readouterr().out
    assert "1 of 38 labels look wrong" in out and f"(COPY.xlsx: a copy of {labels}; the studio" in out
    assert f"(2 row(s) of {labels} without a label, blank or marked unsure, were left out)" in out
    review = pd.read_csv(tmp_path / "review.csv", dtype={"img_name": str})
    assert review.to_dict("records") == [dict(img_name="003.png", target=0, p_open=0.95, rank=1,
                                              score=pytest.approx(0.05))]
    store = LabelStore(labels, images)
    queue = Studio(store, review=read_review(tmp_path / "review.csv", store.files))
    assert queue.mode == "review" and queue.order == ["003.png"] and queue.start() == 0
    before = store.state("003.png")  # kept as it is in a review: it comes back, said to be reviewed already
    store.apply([dict(name="003.png", before=before, after=dict(before, reviewed=True))])
    spaced = tmp_path / "my review.csv"
    main(["audit", "--images", str(images), "--labels", str(labels), "--oof", str(oof), "--out", str(spaced)])
    out = capsys.readouterr().out
    assert f"(1 of them were reviewed already: marked reviewed in {labels})" in out
    assert f"--review {shlex.quote(str(spaced))}\n" in out and shlex.quote(str(spaced)) != str(spaced)
    oof.write_text(oof.read_text().replace("003.png,0.95", "003.png,0.05"))  # now every label agrees
    main(["audit", "--images", str(images), "--labels", str(labels), "--oof", str(oof),
          "--out", str(tmp_path / "review.csv")])
    assert "0 of 38 labels look wrong" in (out := capsys.readouterr().out) and "review them" not in out
    assert "not used" not in out  # every row of the scores was audited
    extra = pd.concat([pd.read_csv(oof), pd.DataFrame({"img_name": ["038.png", "other.png"], "p_open": [0.5, 0.5]})])
    extra.to_csv(oof, index=False)  # scores of an image not labelled yet and of one the labels do not hold
    main(["audit", "--images", str(images), "--labels", str(labels), "--oof", str(oof),
          "--out", str(tmp_path / "review.csv")])
    assert f"(2 row(s) of {oof} name no labelled image of {labels}; not used)" in capsys.readouterr().out
    extra.iloc[:38].to_csv(oof, index=False)
    inverted = pd.read_csv(oof).assign(p_open=lambda d: 1 - d["p_open"])  # P(closed) by mistake
    inverted.to_csv(oof, index=False)
    with pytest.raises(SystemExit, match=r"error: .*oof.csv: p_open ranks the labels backwards \(AUC 0\.000 "):
        main(["audit", "--images", str(images), "--labels", str(labels), "--oof", str(oof),
              "--out", str(tmp_path / "review.csv")])


def test_audit_keeps_its_out_of_fold_scores_when_the_review_list_fails_to_write(partly_labelled_xlsx, tmp_path,
                                                                                   monkeypatch):
    """--save-oof (the costly part, minutes of training) is written before --out, so a failing --out loses nothing."""
    import eye_clf.__main__ as cli
    images, labels = partly_labelled_xlsx
    oof, saved, out = tmp_path / "oof.csv", tmp_path / "saved.csv", tmp_path / "review.csv"
    pd.DataFrame({"img_name": [f"{i:03d}.png" for i in range(38)],
                  "p_open": [0.95 if i % 2 else 0.05 for i in range(38)]}).to_csv(oof, index=False)
    write = cli.atomic_write

    def full_disk_for_out(path, writer):
        if Path(path) == out:
            raise OSError(28, "No space left on device")
        return write(path, writer)
    monkeypatch.setattr(cli, "atomic_write", full_disk_for_out)
    with pytest.raises(SystemExit, match="No space left on device"):
        main(["audit", "--images", str(images), "--labels", str(labels), "--oof", str(oof), "--out", str(out),
              "--save-oof", str(saved)])
    assert len(pd.read_csv(saved)) == 38 and not out.exists()


def test_audit_cli_trains_folds_and_resumes_from_its_fold_dir(partly_labelled_xlsx, tmp_path, monkeypatch):
    images, labels = partly_labelled_xlsx
    argv = ["audit", "--images", str(images), "--labels", str(labels), "--folds", "2", "--epochs", "1",
            "--width", "4", "--batch-size", "8", "--out", str(tmp_path / "review.csv"),
            "--save-oof", str(tmp_path / "oof.csv"), "--fold-dir", str(tmp_path / "folds")]
    main(argv)
    oof = pd.read_csv(tmp_path / "oof.csv", dtype={"img_name": str})
    assert len(oof) == 38 and oof["p_open"].between(0, 1).all()
    assert list(pd.read_csv(tmp_path / "review.csv").columns) == ["img_name", "target", "p_open", "rank", "score"]
    assert sorted(p.name for p in (tmp_path / "folds").iterdir()) == ["fold0.json", "fold0.pt", "fold1.json",
                                                                       "fold1.pt"]
    monkeypatch.setattr("eye_clf.cv.fit_recipe", lambda *args, **kw: pytest.fail("trained a fold again"))
    (tmp_path / "oof.csv").unlink()
    main(argv)  # an interrupted audit's rerun: every fold is read back
    assert pd.read_csv(tmp_path / "oof.csv", dtype={"img_name": str}).equals(oof)


def test_one_class_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    eye(1).save(tmp_path / "images" / "a.png")
    pd.DataFrame({"img_name": ["a.png"], "target": [1]}).to_excel(tmp_path / "l.xlsx", index=False)
    with pytest.raises(LabelError, match="both classes"):
        labeled(tmp_path / "images", tmp_path / "l.xlsx")


def test_audit_defaults_to_the_reference_labels_file_for_the_data_folders_images(partly_labelled_xlsx, real_root,
                                                                                  tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(real_root))  # the default folder or the one $EYE_CLF_DATA chose
    images, _ = partly_labelled_xlsx
    seen = []

    def fake_audit(images_dir, labels, *args, **kwargs):
        seen.append(labels)
        return pd.DataFrame({"img_name": []}), [], [], []  # an empty review list

    monkeypatch.setattr("eye_clf.audit.audit", fake_audit)
    main(["audit", "--out", str(tmp_path / "review.csv")])  # the data folder's EyesDataset
    assert seen == [data.labels_file()] and seen[0] == data.REPO_ROOT / "img_name_target.xlsx"
    with pytest.raises(SystemExit, match=r"--images .*: the project's reference labels .* pass --labels"):
        main(["audit", "--images", str(images), "--out", str(tmp_path / "review.csv")])  # other images: say which


def test_audit_measure_cache_is_complete_or_absent(tmp_path, monkeypatch):
    """A measurement interrupted between its two cache files leaves no cache that a later run would half-read."""
    from test_experiment import load_script
    measure = load_script("audit_measure")
    monkeypatch.setattr(measure, "cross_val_predict", lambda *args: (np.array([0.2, 0.8]), None))
    real, writes = measure.atomic_write, []

    def interrupted_at_the_second_file(path, write):
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt
        real(path, write)
    monkeypatch.setattr(measure, "atomic_write", interrupted_at_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        measure.oof(None, None, None, 2, 0, tmp_path / "oof.csv")
    monkeypatch.setattr(measure, "atomic_write", real)
    p, run, cached = measure.oof(None, None, None, 2, 0, tmp_path / "oof.csv")
    assert not cached and p.tolist() == [0.2, 0.8]
    _, again, cached = measure.oof(None, None, None, 2, 0, tmp_path / "oof.csv")
    assert cached and again == json.loads(json.dumps(run)) and again["provenance"]["git_commit"]  # who made it


def test_audit_measure_cache_is_keyed_by_the_whole_recipe():
    import copy
    from dataclasses import fields, replace

    from test_experiment import load_script
    tag = load_script("audit_measure").cache_tag
    images, targets = np.zeros((4, 24, 24), np.uint8), np.array([0, 1, 0, 1])
    cfg = TrainConfig(epochs=25, refit=False)
    assert tag(cfg, 5, images, targets) == tag(replace(cfg), 5, images, targets)
    changed = []
    for field in fields(TrainConfig):  # each field in turn (unvalidated: only the key is computed)
        other = copy.copy(cfg)
        object.__setattr__(other, field.name, ("changed", getattr(cfg, field.name)))
        changed.append(tag(other, 5, images, targets))
    changed += [tag(cfg, 4, images, targets), tag(cfg, 5, images + 1, targets),
                tag(cfg, 5, images, 1 - targets)]
    assert len(set(changed)) == len(changed) and tag(cfg, 5, images, targets) not in changed



def test_audit_measure_refuses_a_data_folder_without_the_other_annotations_before_training(tmp_path, monkeypatch,
                                                                                          real_root, capsys):
    from test_experiment import load_script
    measure = load_script("audit_measure")
    monkeypatch.setattr(measure, "flipped_audit", lambda *args: pytest.fail("trained before checking the data"))
    root = tmp_path / "data"
    root.mkdir()
    (root / "EyesDataset").symlink_to(real_root / "EyesDataset")
    (root / "img_name_target.xlsx").symlink_to(real_root / "img_name_target.xlsx")
    timing = tmp_path / "timing.json"
    timing.write_text("{}")
    monkeypatch.setattr("sys.argv", ["audit_measure.py", "--data", str(root), "--timing", str(timing),
                                     "--out", str(tmp_path / "report.md")])
    with pytest.raises(SystemExit):
        measure.main()
    assert f"{root / 'other_annotations.csv'} missing" in capsys.readouterr().err


def test_an_interrupted_audit_says_so_in_one_line(partly_labelled_xlsx, tmp_path, monkeypatch, capsys):
    images, labels = partly_labelled_xlsx

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("eye_clf.audit.audit", ctrl_c)
    with pytest.raises(SystemExit) as err:
        main(["audit", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "review.csv")])
    assert err.value.code == 130 and capsys.readouterr().err == "interrupted\n"
    assert not (tmp_path / "review.csv").exists()


@pytest.mark.parametrize("flags, named", [(["--fold-dir", "folds"], "--fold-dir"),
                                          (["--epochs", "5"], "recipe flags"),
                                          (["--folds", "3", "--threads", "1"], "--folds, --threads")])
def test_audit_with_given_oof_refuses_the_flags_of_training(partly_labelled_xlsx, tmp_path, flags, named):
    images, labels = partly_labelled_xlsx
    with pytest.raises(SystemExit, match=f"^error: --oof: the audit trains nothing with --oof, so its {named} would "
                                         "do nothing; drop them$"):
        main(["audit", "--images", str(images), "--labels", str(labels), "--oof", str(tmp_path / "oof.csv"),
              *flags, "--out", str(tmp_path / "review.csv")])
