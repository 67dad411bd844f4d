import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from eye_clf import data
from eye_clf.data import LabelError

from conftest import smooth_image


# ---- data_dir ----------------------------------------------------------------------------------------------

def fake_root(path):
    (path / "EyesDataset").mkdir(parents=True)
    (path / "img_name_target.xlsx").touch()
    return path


def test_data_dir_argument_beats_env_beats_default(tmp_path, monkeypatch):
    arg, env, repo = fake_root(tmp_path / "arg"), fake_root(tmp_path / "env"), tmp_path / "repo"
    fake_root(tmp_path / "shared" / "data")
    monkeypatch.setattr(data, "REPO_ROOT", repo)
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert data.data_dir() == tmp_path / "shared" / "data"
    monkeypatch.setenv(data.DATA_ENV, str(env))
    assert data.data_dir() == env
    assert data.data_dir(arg) == arg
    assert data.data_dir(str(arg)) == arg


def test_data_dir_missing_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'shared' / 'data'} (the default)")) as err:
        data.data_dir()
    assert "EyesDataset" in str(err.value) and data.DATA_ENV in str(err.value)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "stale"))  # which setting named the folder
    for call in (data.data_dir, data.labels_file):  # labels_file, as train and cv call it first
        with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'stale'} (${data.DATA_ENV})")):
            call()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'flag'} (--data)")):
        data.data_dir(tmp_path / "flag")
    monkeypatch.delenv(data.DATA_ENV)
    half = tmp_path / "half"
    (half / "EyesDataset").mkdir(parents=True)  # images but no labels, outside a checkout
    assert data.data_dir(half) == half
    with pytest.raises(FileNotFoundError, match="img_name_target.xlsx"):
        data.labels_file(root=half)


def test_labels_default_to_the_checkouts_reference_file(real_root, monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert data.labels_file() == data.REPO_ROOT / "img_name_target.xlsx"
    assert data.labels_file("x.csv") == Path("x.csv")


def test_a_data_folder_with_other_labels_than_the_reference_must_choose(tmp_path, monkeypatch):
    """Another data folder (no copy of the reference, or a different one) or other images must name --labels."""
    other = tmp_path / "other"
    (other / "EyesDataset").mkdir(parents=True)
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    reference = data.REPO_ROOT / "img_name_target.xlsx"
    with pytest.raises(ValueError, match=r"other has no img_name_target.xlsx, and the project's reference labels"):
        data.labels_file(root=other)  # none there: another dataset must name its labels
    with pytest.raises(ValueError, match=r"--images .*other.*EyesDataset/ \(.*\); pass --labels .*, or --data"):
        data.labels_file(images=other / "EyesDataset")  # other images, the default data folder
    (other / "img_name_target.xlsx").write_bytes(reference.read_bytes())
    assert data.labels_file(root=other, images=tmp_path / "other" / ".." / "other" / "EyesDataset") == reference
    assert data.labels_file(root=other) == reference  # the same file: no ambiguity
    (other / "img_name_target.xlsx").write_bytes(b"other labels")
    for root, env in ((other, None), (None, other)):
        if env:
            monkeypatch.setenv(data.DATA_ENV, str(env))
        with pytest.raises(ValueError, match="two labels files: .*other.*differs from .*pass --labels"):
            data.labels_file(root=root)
    assert data.labels_file("x.csv") == Path("x.csv")


# ---- images of any size and mode ---------------------------------------------------------------------------

def palette_image(g, size=(40, 30)):
    image = Image.new("P", size, 1)
    image.putpalette([0, 0, 0, g, g, g])
    return image


def constant_images(g):
    """The same gray level ``g`` in many modes and sizes."""
    rgb = Image.new("RGB", (40, 30), (g, g, g))
    return {
        "L 24x24": Image.new("L", (24, 24), g),
        "RGB non-square": rgb,
        "RGBA": Image.new("RGBA", (33, 33), (g, g, g, 128)),
        "P": palette_image(g),
        "LA": Image.new("LA", (24, 50), (g, 255)),
        "16-bit": Image.fromarray(np.full((30, 20), g * 257, np.uint16)),
        "32-bit int": Image.fromarray(np.full((30, 20), g * 257, np.int32)),
        "large RGB": Image.new("RGB", (1600, 1200), (g, g, g)),
    }


@pytest.mark.parametrize("g", [10, 128, 240])
def test_any_mode_and_size_becomes_24x24_uint8_of_the_same_gray(g):
    for name, image in constant_images(g).items():
        out = data.to_gray24(image)
        assert out.shape == (24, 24) and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - g).max() <= 1, name


def test_16bit_gradient_keeps_its_contrast():
    a8 = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (48, 1))
    out16 = data.to_gray24(Image.fromarray(a8.astype(np.uint16) * 257))
    assert np.abs(out16.astype(int) - data.to_gray24(Image.fromarray(a8))).max() <= 1


def test_downscaling_is_antialiased():
    checker = ((np.indices((240, 240)).sum(0) % 2) * 255).astype(np.uint8)  # 1-px checkerboard
    out = data.to_gray24(Image.fromarray(checker))
    assert np.abs(out.astype(int) - 127).max() <= 3  # averaged, not aliased to black/white


def test_colour_uses_luminance():
    out = data.to_gray24(Image.new("RGB", (24, 24), (255, 0, 0)))
    assert np.all(out == round(0.299 * 255))


@pytest.mark.parametrize("suffix,mode", [(".png", "L"), (".png", "RGBA"), (".png", "P"), (".jpg", "RGB"),
                                         (".bmp", "RGB"), (".png", "I;16"), (".tif", "L")])
def test_files_through_eye_dataset_give_normalized_1x24x24(tmp_path, suffix, mode):
    g = 200
    if mode == "I;16":
        image = Image.fromarray(np.full((50, 70), g * 257, np.uint16))
    else:
        image = palette_image(g, (70, 50)) if mode == "P" else Image.new("RGB", (70, 50), (g, g, g)).convert(mode)
    path = tmp_path / f"img{suffix}"
    image.save(path)
    arr = data.load_image(path)
    assert arr.shape == (24, 24) and arr.dtype == np.uint8
    x, y = data.EyeDataset(np.stack([arr]), [1])[0]
    assert x.shape == (1, 24, 24) and x.dtype == torch.float32 and y.item() == 1.0
    assert torch.allclose(x, torch.full_like(x, (g / 255 - data.MEAN) / data.STD), atol=1.5 / 255 / data.STD)


def test_normalization_matches_to_tensor():
    images = np.random.default_rng(0).integers(0, 256, (5, 24, 24), dtype=np.uint8)
    ds = data.EyeDataset(images, np.zeros(5))
    stacked = torch.stack([ds[i][0] for i in range(5)])
    assert torch.equal(stacked, data.to_tensor(images))
    assert torch.allclose(stacked, (torch.from_numpy(images).float()[:, None] / 255 - 0.5) / 0.2)


def test_load_image_turns_the_image_upright_as_its_exif_orientation_says(tmp_path):
    stored = np.zeros((24, 24), np.uint8)
    stored[:, :12] = 255  # left half white as stored; orientation 6: viewers turn it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    upright = data.load_image(tmp_path / "phone.png")
    assert upright[:12].mean() > 250 and upright[12:].mean() < 5  # the white half is now on top
    with Image.open(tmp_path / "phone.png") as opened:  # a PIL image of the file: the same
        assert np.array_equal(data.to_gray24(opened), upright)


def test_a_pil_image_made_from_a_files_image_is_taken_as_its_pixels_are(tmp_path):
    """A crop, rotation, resize or copy keeps the file's EXIF orientation, which no longer describes its pixels (the
    caller may have turned it already): it is read as an array of its pixels is, not turned a second time."""
    stored = np.zeros((24, 48), np.uint8)
    stored[:, :24] = 255  # left half white; orientation 6: viewers turn it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    with Image.open(tmp_path / "phone.png") as opened:
        upright = opened.transpose(Image.Transpose.ROTATE_270)  # turned by hand: white on top, EXIF kept
        assert upright.getexif().get(0x0112) == 6
        for made in (upright, upright.crop((0, 0, 24, 40)), upright.resize((30, 50)), opened.copy()):
            assert np.array_equal(data.to_gray24(made), data.to_gray24(Image.fromarray(np.asarray(made))))
        assert data.to_gray24(upright)[:12].mean() > 250 and data.to_gray24(upright)[12:].mean() < 5
        assert np.array_equal(data.to_gray24(upright), data.to_gray24(opened))


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        data.load_image(tmp_path / "nope.png")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not an image file.*notes.jpg"):
        data.load_image(text)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt image.*broken.jpg"):
        data.load_image(broken)


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ["b.png", "a.JPG", "c.txt", "d.jpeg"]:
        (tmp_path / name).touch()
    (tmp_path / "e.png").mkdir()
    assert [p.name for p in data.list_images(tmp_path)] == ["a.JPG", "b.png", "d.jpeg"]
    with pytest.raises(FileNotFoundError, match="missing"):
        data.list_images(tmp_path / "missing")


# ---- labels ------------------------------------------------------------------------------------------------

def write(df, path):
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_excel(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_read_labels_good(tmp_path, suffix):
    (tmp_path / "a.jpg").touch()
    (tmp_path / " b.jpg").touch()  # names are matched exactly, never stripped
    path = write(pd.DataFrame({"img_name": ["a.jpg", " b.jpg"], "target": [1, 0], "extra": [5, 6]}),
                 tmp_path / f"labels{suffix}")
    df = data.read_labels(path, images_dir=tmp_path)
    assert list(df.columns) == ["img_name", "target"]
    assert df["img_name"].tolist() == ["a.jpg", " b.jpg"] and df["target"].tolist() == [1, 0]
    assert df["target"].dtype.kind == "i"


def test_read_labels_real_spreadsheet(real_root):
    df = data.read_labels(real_root / "img_name_target.xlsx", images_dir=real_root / "EyesDataset")
    assert len(df) == 4000 and set(df["target"]) == {0, 1} and df["img_name"].is_unique


BAD = {  # rows (spreadsheet numbering: header is row 1) -> expected words in the message
    "target 2": ({"img_name": ["a.jpg", "b.jpg"], "target": [1, 2]}, [r"row 3 \(b.jpg\): target 2"]),
    "target yes": ({"img_name": ["a.jpg", "b.jpg"], "target": ["yes", 0]}, [r"row 2 \(a.jpg\): target 'yes'"]),
    "target blank": ({"img_name": ["a.jpg", "b.jpg"], "target": [1, None]}, [r"row 3 \(b.jpg\): target"]),
    "target 0.5": ({"img_name": ["a.jpg", "b.jpg"], "target": [0.5, 1]}, [r"row 2 \(a.jpg\): target 0.5"]),
    "duplicate": ({"img_name": ["a.jpg", "b.jpg", "a.jpg"], "target": [1, 0, 1]},
                  [r"row 2 \(a.jpg\): duplicate", r"row 4 \(a.jpg\): duplicate"]),
    "same file, two spellings": ({"img_name": ["a.jpg", "b.jpg", ".//a.jpg"], "target": [1, 0, 0]},
                                 [r"row 2 \(a.jpg\): duplicate", r"row 4 \(.//a.jpg\): duplicate"]),
    "missing image": ({"img_name": ["a.jpg", "gone.jpg"], "target": [1, 0]},
                      [r"row 3 \(gone.jpg\): image file not found"]),
    "blank name": ({"img_name": ["a.jpg", None], "target": [1, 0]}, [r"row 3: img_name is empty"]),
    "numeric name": ({"img_name": ["a.jpg", 7], "target": [1, 0]}, [r"row 3 \(7\): image file not found"]),
}


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_label_raises_label_error_naming_the_row(tmp_path, suffix, case):
    (tmp_path / "a.jpg").touch()
    (tmp_path / "b.jpg").touch()
    rows, expected = BAD[case]
    path = write(pd.DataFrame(rows), tmp_path / f"labels{suffix}")
    with pytest.raises(LabelError) as err:
        data.read_labels(path, images_dir=tmp_path)
    for pattern in expected:
        assert re.search(pattern, str(err.value)), (pattern, str(err.value))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_all_bad_rows_are_listed_at_once(tmp_path, suffix):
    (tmp_path / "ok.jpg").touch()
    (tmp_path / "dup.jpg").touch()
    df = pd.DataFrame({"img_name": ["ok.jpg", "dup.jpg", "dup.jpg", "gone.jpg", "ok2.jpg", "", "x.jpg"],
                       "target": [1, 0, 0, 1, "yes", 1, 2]})
    (tmp_path / "ok2.jpg").touch()
    (tmp_path / "x.jpg").touch()
    with pytest.raises(LabelError) as err:
        data.read_labels(write(df, tmp_path / f"labels{suffix}"), images_dir=tmp_path)
    msg = str(err.value)
    assert "6 bad row(s)" in msg
    for row in ["row 3 (dup.jpg)", "row 4 (dup.jpg)", "row 5 (gone.jpg)", "row 6 (ok2.jpg)", "row 7",
                "row 8 (x.jpg)"]:
        assert row in msg
    assert "row 2 " not in msg


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_missing_column_and_empty_sheet(tmp_path, suffix):
    path = write(pd.DataFrame({"img_name": ["a.jpg"], "label": [1]}), tmp_path / f"cols{suffix}")
    with pytest.raises(LabelError, match=r"missing column\(s\) \['target'\]"):
        data.read_labels(path)
    path = write(pd.DataFrame({"img_name": [], "target": []}), tmp_path / f"empty{suffix}")
    with pytest.raises(LabelError, match="no rows"):
        data.read_labels(path)


def test_blank_files_are_label_errors(tmp_path):
    blank_csv = tmp_path / "blank.csv"
    blank_csv.touch()
    with pytest.raises(LabelError, match="blank.csv"):
        data.read_labels(blank_csv)
    blank_xlsx = write(pd.DataFrame(), tmp_path / "blank.xlsx")
    with pytest.raises(LabelError, match="blank.xlsx"):
        data.read_labels(blank_xlsx)


def test_missing_labels_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels file not found.*nope.xlsx"):
        data.read_labels(tmp_path / "nope.xlsx")


def test_load_dataset_custom_labels_and_limit(labelled_folder):
    folder, labels, images, targets = labelled_folder
    root = folder.parent
    (root / "EyesDataset").symlink_to(folder)
    (root / "img_name_target.xlsx").touch()  # the default sheet is replaced by labels=
    x, y, names = data.load_dataset(root, labels=labels)
    assert np.array_equal(x, images) and np.array_equal(y, targets) and names[0] == "000.png"
    x, y, names = data.load_dataset(root, labels=labels, limit=10)
    assert x.shape == (10, 24, 24) and y.sum() == 5 and len(set(names)) == 10
    with pytest.raises(ValueError, match=r"limit 39 of 40 images: .*; use 40 for all of them"):
        data.load_dataset(root, labels=labels, limit=39)  # the one image left out cannot be of both classes


def test_load_dataset_real_limit(real_root):
    x, y, names = data.load_dataset(real_root, limit=100)
    full = data.read_labels(real_root / "img_name_target.xlsx").set_index("img_name")["target"]
    assert x.shape == (100, 24, 24) and x.dtype == np.uint8
    assert np.array_equal(y, full[names].to_numpy())
    assert abs(y.mean() - full.mean()) < 0.02  # stratified


# ---- extra annotations -------------------------------------------------------------------------------------

def annotations_root(tmp_path, text):
    (tmp_path / "EyesDataset").mkdir()
    (tmp_path / "other_annotations.csv").write_text(text)
    return tmp_path


def test_soft_targets_are_each_images_share_of_open_votes(tmp_path):
    root = annotations_root(tmp_path, "img_name,annotator_a,annotator_b\na.jpg,1,\nb.jpg,0,0\nc.jpg,,\n")
    extra = data.read_annotations(["b.jpg", "a.jpg", "c.jpg", "d.jpg"], root)  # d.jpg: not in the file
    assert np.array_equal(extra, [[0, 0], [1, np.nan], [np.nan, np.nan], [np.nan, np.nan]], equal_nan=True)
    soft = data.soft_targets([1, 0, 1, 0], ["b.jpg", "a.jpg", "c.jpg", "d.jpg"], root)
    assert np.allclose(soft, [1 / 3, 0.5, 1, 0])


def test_bad_annotations_name_every_row(tmp_path):
    root = annotations_root(tmp_path, "img_name,annotator_a\na.jpg,2\nb.jpg,yes\nc.jpg,1\nc.jpg,0\n")
    with pytest.raises(LabelError) as err:
        data.read_annotations(["a.jpg"], root)
    for row in ("row 2 (a.jpg): annotator_a 2 is not 0, 1 or blank", "row 3 (b.jpg): annotator_a 'yes'",
                "row 4 (c.jpg): duplicate", "row 5 (c.jpg): duplicate"):
        assert row in str(err.value)
    (root / "other_annotations.csv").write_text("img_name,annotator_a\nEyesDataset/a.jpg,1\n  ,0\n")
    with pytest.raises(LabelError, match=r"row 3: img_name is empty"):
        data.read_annotations(["a.jpg"], root)
    (root / "other_annotations.csv").write_text("img_name,annotator_a\nEyesDataset/a.jpg,1\n")
    with pytest.raises(LabelError, match=r"lists none of the 1 labelled images \(e.g. 'a.jpg'; it lists "
                                         r"'EyesDataset/a.jpg'\)"):
        data.read_annotations(["a.jpg"], root)
    (root / "other_annotations.csv").write_text("img_name\na.jpg\n")
    with pytest.raises(LabelError, match="one column per annotator"):
        data.read_annotations(["a.jpg"], root)
    (root / "other_annotations.csv").unlink()
    with pytest.raises(FileNotFoundError, match="annotations file not found.*other_annotations.csv"):
        data.read_annotations(["a.jpg"], root)


def test_every_reader_words_an_empty_or_repeated_name_alike(tmp_path):
    """Labels, extra annotations, out-of-fold predictions and review lists: one check, one wording."""
    from eye_clf.audit import read_oof
    from eye_clf.studio import read_review
    names = ["a.jpg", " ", "./a.jpg"]  # row 3 is empty; rows 2 and 4 name the same file
    want = ("row 3: img_name is empty", "row 2 (a.jpg): duplicate img_name (another row names the same file)",
            "row 4 (./a.jpg): duplicate img_name (another row names the same file)")
    root = annotations_root(tmp_path, pd.DataFrame({"img_name": names, "annotator_a": 1}).to_csv(index=False))
    sheet = pd.DataFrame({"img_name": names, "target": 1, "p_open": 0.5, "rank": [1, 2, 3], "score": 0.5})
    sheet.to_csv(path := tmp_path / "sheet.csv", index=False)
    for read in (lambda: data.read_labels(path), lambda: data.read_labels(path, partial=True),
                 lambda: data.read_annotations(["a.jpg"], root), lambda: read_oof(path, ["a.jpg"]),
                 lambda: read_review(path, ["a.jpg"])):
        with pytest.raises(LabelError) as err:
            read()
        assert all(line in str(err.value) for line in want), str(err.value)


def test_real_annotations_cover_the_dataset(real_root):
    _, targets, names = data.load_dataset(real_root, limit=200)
    soft = data.soft_targets(targets, names, real_root)
    assert soft.shape == (200,) and ((soft >= 0) & (soft <= 1)).all()
    assert 0 < np.mean(soft != targets) < 0.2  # the annotators disagree with the reference on a few images
    data.check_annotated(real_root, real_root / "EyesDataset")  # their images, named as such


def test_soft_labels_refuse_images_the_annotations_do_not_label(real_root, tmp_path):
    """Another folder's images may carry the dataset's file names (000000.jpg ...): its annotations are not theirs."""
    (tmp_path / "000000.jpg").write_bytes((real_root / "EyesDataset" / "000000.jpg").read_bytes())
    eyes, notes = (re.escape(str(real_root / name)) for name in ("EyesDataset", "other_annotations.csv"))
    with pytest.raises(ValueError, match=rf"soft labels: the extra annotators' labels \({notes}\) are those of {eyes}, "
                                         rf"not of the images in {re.escape(str(tmp_path))}$"):
        data.check_annotated(real_root, tmp_path)


# ---- splits ------------------------------------------------------------------------------------------------

def test_split_is_deterministic_stratified_and_disjoint():
    targets = np.array([1] * 300 + [0] * 100)
    a = data.split(targets, seed=1)
    b = data.split(targets, seed=1)
    c = data.split(targets, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    train_idx, val_idx, test_idx = a
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(400))
    assert abs(len(val_idx) - 60) <= 1 and abs(len(test_idx) - 60) <= 1
    for part in a:
        assert targets[part].mean() == pytest.approx(0.75, abs=0.01)


def test_kfold_partitions_stratified():
    targets = np.array([1] * 60 + [0] * 40)
    folds = data.kfold(targets, folds=5, seed=0)
    assert len(folds) == 5
    tests = np.concatenate([t for _, t in folds])
    assert np.array_equal(np.sort(tests), np.arange(100))
    for tr, te in folds:
        assert not set(tr) & set(te) and len(tr) + len(te) == 100
        assert targets[te].mean() == pytest.approx(0.6)
    again = data.kfold(targets, folds=5, seed=0)
    other = data.kfold(targets, folds=5, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


# ---- augmentation ------------------------------------------------------------------------------------------

def test_augmentation_returns_uint8_1x24x24_and_changes_images():
    x = torch.from_numpy(smooth_image())[None]
    aug = data.augmentation()
    outs = [aug(x) for _ in range(10)]
    for out in outs:
        assert out.shape == (1, 24, 24) and out.dtype == torch.uint8
    assert sum(not torch.equal(out, x) for out in outs) >= 9
    assert len({out.numpy().tobytes() for out in outs}) >= 9  # random, not one fixed transform


def test_augmentation_invert_and_no_strength():
    x = torch.from_numpy(smooth_image())[None]
    for _ in range(5):
        out = data.augmentation(strength=0, invert=1.0)(x)
        assert torch.equal(out, 255 - x)  # strength 0: no flip either


def test_batch_augmentation_gives_each_image_its_own_parameters():
    x = torch.from_numpy(smooth_image()).float().div(255).expand(16, 1, 24, 24)
    out = data.batch_augmentation()(x)
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert len({o.numpy().tobytes() for o in out}) == 16  # one input, sixteen different augmentations
    assert data.batch_augmentation(0, 0) is None
    assert torch.allclose(data.batch_augmentation(strength=0, invert=1.0)(x), 1 - x)


def test_both_augmentations_erase_one_grey_rectangle_when_asked():
    x = torch.from_numpy(smooth_image())[None]
    per_image = [data.augmentation(strength=0, erase=1.0)(x) for _ in range(20)]
    batch = data.batch_augmentation(strength=0, erase=1.0)(x.float().div(255).expand(20, 1, 24, 24))
    grey = round(255 * data.MEAN)
    for out in per_image + [(b * 255).round().to(torch.uint8) for b in batch]:
        changed = out != x
        rows, cols = changed[0].any(1).nonzero(), changed[0].any(0).nonzero()
        assert changed.any() and (out[changed] == grey).all()
        # one rectangle, at most 20% of the image: its bounding box is all grey (pixels already grey stay so)
        box = out[0, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box == grey).all() and box.numel() <= 0.2 * 24 * 24 + 24
    assert data.augmentation(strength=0, erase=0) is None and data.batch_augmentation(0, 0, erase=0) is None


@pytest.mark.parametrize("resample", ["nearest", "bilinear"])
def test_both_augmentations_resample_as_asked(resample):
    assert data.augmentation(resample=resample).transforms[1].interpolation.value == resample
    assert data.batch_augmentation(resample=resample)[1].flags["resample"].name == resample.upper()


def test_dataset_applies_transform():
    images = np.stack([smooth_image(seed=i) for i in range(4)])
    plain = data.EyeDataset(images, np.ones(4))
    aug = data.EyeDataset(images, np.ones(4), data.augmentation())
    assert len(aug) == 4
    assert not torch.equal(plain[0][0], aug[0][0])
    assert aug[0][0].shape == (1, 24, 24) and aug[0][0].dtype == torch.float32


@pytest.mark.parametrize("zoom", [0.1, 0.2])
def test_zoom_sets_the_scale_range_of_both_augmentations(zoom):
    assert data.augmentation(zoom=zoom).transforms[1].scale == pytest.approx((1 - zoom, 1 + zoom))
    assert data.batch_augmentation(zoom=zoom)[1]._param_generator.scale == pytest.approx((1 - zoom, 1 + zoom))


@pytest.mark.parametrize("affine_p, unchanged", [(0.5, (0.4, 0.6)), (1.0, (0.0, 0.05))])
def test_the_batch_path_shifts_rotates_and_zooms_a_share_affine_p_of_the_images(affine_p, unchanged):
    """The image-by-image path transforms every image; the batch path each with probability affine_p."""
    torch.manual_seed(0)
    x = torch.from_numpy(smooth_image()).float().div(255).expand(400, 1, 24, 24).contiguous()
    moved = data.batch_augmentation(affine_p=affine_p)[1](x)  # the affine step alone
    share = (moved - x).abs().flatten(1).amax(1).lt(1e-6).float().mean().item()
    assert unchanged[0] <= share <= unchanged[1]
    by_image = data.augmentation().transforms[1]
    u8 = torch.from_numpy(smooth_image())[None]
    assert sum(torch.equal(by_image(u8), u8) for _ in range(100)) <= 5


@pytest.mark.parametrize("pad", ["zeros", "border"])
def test_pad_sets_the_border_fill_of_the_batch_augmentation(pad):
    assert data.batch_augmentation(pad=pad)[1].flags["padding_mode"].name == pad.upper()
