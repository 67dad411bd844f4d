"""Data: where the dataset lives, the labels spreadsheet, the dataset's images, splits and augmentation.

Image reading and normalisation live in ``preprocess`` (shared with prediction) and are re-exported here.
"""
import hashlib
import io
import math
import os
import re
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split
from torchvision.transforms import v2

from .files import ANNOTATIONS_NAME, IMAGES_FOLDER, LABELS_NAME, checkout
from .preprocess import (IMAGE_SUFFIXES, IMG_SIZE, MEAN, MODE, STD, list_images,  # noqa: F401 (re-exported)
                         load_image, normalize, standardize, to_gray24)

DATA_ENV = "EYE_CLF_DATA"
REPO_ROOT = checkout() or Path.cwd()  # the checkout; installed as a package: the current folder
MAX_CELLS = 50_000_000  # of an xlsx sheet's extent: a million rows of 50 columns
SAVE_AS = "save it as an Excel Workbook (.xlsx) or as CSV UTF-8"  # (an .xls, .ods or encrypted file renamed .xlsx)


class LabelError(ValueError):
    """A labels spreadsheet that cannot be used; the message names the offending rows."""

    SHOWN = 20  # rows listed in a message; the rest are counted

    @classmethod
    def rows(cls, path, problems):
        """The error for a file with bad rows: how many, the first SHOWN of them, and how many more."""
        more = len(problems) - cls.SHOWN
        return cls(f"{path}: {len(problems)} bad row(s):\n  " + "\n  ".join(problems[:cls.SHOWN])
                   + (f"\n  ... and {more} more" if more > 0 else ""))


def chosen_data_dir(path=None):
    """The folder that ``path``, else $EYE_CLF_DATA, else the default (../shared/data beside the repository) names."""
    return Path(path or os.environ.get(DATA_ENV) or REPO_ROOT.parent / "shared" / "data")


def data_dir(path=None):
    """The dataset folder: ``path`` if given, else $EYE_CLF_DATA, else ../shared/data beside the repository (for an
    installed eye_clf: beside the current folder, see REPO_ROOT)."""
    source = "--data" if path else f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "the default"
    chosen = chosen_data_dir(path)
    if not (chosen / IMAGES_FOLDER).is_dir():
        raise FileNotFoundError(
            f"eye_clf dataset not found in {chosen} ({source}): put EyesDataset/ (the eye images: the 24x24 CEW "
            f"patches, or your own of any size) there, or point ${DATA_ENV} or --data at the folder that holds it.")
    return chosen


def labels_file(path=None, root=None, images=None):
    """The labels spreadsheet: ``path`` if given, else the project's reference labels (``img_name_target.xlsx``
    at the top of the checkout, beside the notebooks), else ``img_name_target.xlsx`` in the data folder. The
    reference labels the CEW patches; other images never meet them silently, so ``path`` must choose for a data
    folder chosen by ``root`` or $EYE_CLF_DATA without an identical copy of the reference (none, or one that differs:
    another dataset, or labels changed since the copy), and for an ``images`` folder other than its EyesDataset/."""
    if path:
        return Path(path)
    reference, chosen = REPO_ROOT / LABELS_NAME, root or os.environ.get(DATA_ENV)
    own = Path(chosen) / LABELS_NAME if chosen else None
    if reference.is_file():
        if own is not None and own.is_file() and own.read_bytes() != reference.read_bytes():
            raise ValueError(f"two labels files: {own} (the data folder's) differs from {reference} (the project's "
                             "reference); pass --labels with the one to use")
        if own is not None and not own.is_file():
            data_dir(root)  # a folder without the dataset: that error first
            raise ValueError(f"{chosen} has no {LABELS_NAME}, and the project's reference labels {reference} are "
                             "those of the CEW patches: pass --labels with its images' labels (or put a copy of the "
                             "reference there if they are those patches)")
        eyes = chosen_data_dir(root) / IMAGES_FOLDER
        if images is not None and not (eyes.is_dir() and Path(images).is_dir() and os.path.samefile(images, eyes)):
            raise ValueError(f"--images {images}: the project's reference labels {reference} are those of the data "
                             f"folder's EyesDataset/ ({eyes}); pass --labels with these images' labels, or --data "
                             "with the folder that holds them")
        return reference
    found = data_dir(root) / LABELS_NAME
    if not found.is_file():
        raise FileNotFoundError(f"labels file not found: {found} (pass --labels, or put {LABELS_NAME} there)")
    return found


TAGS = ("dark", "blurry", "glasses", "angle", "inverted", "other")
FLAGS = ("unsure", "reviewed") + TAGS  # 0/1 columns of a labels file still being made (the studio's)


def filled(cell):
    """Whether a cell holds something: not empty, not only spaces (a non-breaking one too)."""
    return not (pd.isna(cell) or (isinstance(cell, str) and not cell.strip()))


def name_problems(names):
    """The img_name problem of each row of ``names`` (a Series indexed by row number), as every reader words it:
    ``{position: "row R: img_name is empty"}`` (blank or only spaces), or ``"row R (NAME): duplicate img_name
    (another row names the same file)"`` (``./a.jpg`` names ``a.jpg``). Rows without a problem are left out."""
    named = names.map(filled)
    same_file = names.map(lambda n: str(PurePosixPath(n)) if filled(n) else None)
    twice = same_file.duplicated(keep=False) & named
    return {i: f"row {row}: img_name is empty" if not named.iloc[i] else
            f"row {row} ({name}): duplicate img_name (another row names the same file)"
            for i, (row, name) in enumerate(names.items()) if not named.iloc[i] or twice.iloc[i]}


def check_span(path):
    """Refuse an xlsx whose first sheet spans more than MAX_CELLS (rows x columns up to its farthest cell): pandas
    fills every cell of that rectangle, so one stray cell at XFD1048576 would take all the memory there is. Returns
    the names of its sheets."""
    import openpyxl
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        if not book.worksheets:  # openpyxl reads no sheet of a "Strict Open XML" file
            raise LabelError(f"{path}: no worksheet that openpyxl can read (a Strict Open XML file?); {SAVE_AS}")
        sheets, sheet = book.sheetnames, book.worksheets[0]
        sheet.reset_dimensions()  # the extent of the cells themselves, not what the file's header claims
        if next(iter(sheet.rows), None) is None:  # an empty sheet, on which calculate_dimension fails
            return sheets
        span = sheet.calculate_dimension(force=True)
        rows, cols = sheet.max_row or 0, sheet.max_column or 0
    finally:
        book.close()
    if rows * cols > MAX_CELLS:
        raise LabelError(f"{path}: its first sheet spans {span} ({rows:,} rows x {cols:,} columns), far more than a "
                         f"labels table: delete the stray cells (with a value or only formatting) out to its last row "
                         f"or column, as far as {span.split(':')[-1]}, and save it again")
    return sheets


def first_sheet_note(df):
    """For a message about what ``read_sheet`` read: ' (only the first of its sheets [...] is read)' when the file
    has more than one, else ''."""
    sheets = df.attrs.get("sheets", [])
    return f" (only the first of its sheets {sheets} is read)" if len(sheets) > 1 else ""


def csv_problem(err):
    """pandas' CSV parser error in words, with its line numbers as an editor counts them (its 'row' is 0-based)."""
    text = str(err).strip()
    if m := re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text):
        return (f"line {m[2]} has {m[3]} fields where the header has {m[1]}: a comma too many, or one inside an "
                "unquoted cell")
    if m := re.search(r"EOF inside string starting at row (\d+)", text):
        return f"the quote opened on line {int(m[1]) + 1} is never closed"
    return f"{type(err).__name__}: {text}"


def read_sheet(path, what="labels file"):
    """A spreadsheet as a DataFrame: ``.csv`` as UTF-8 text (a BOM is allowed), anything else as xlsx.

    xlsx cells are read as stored (a text "007" stays text), so that a rewrite keeps the other columns as they were
    (CSV cells that are numbers become numbers); ``img_name`` is exact text, never stripped. The header is the first
    row that is not blank; blank rows (empty, or only spaces) are left out, and the index is each row's number in
    the file, for messages. A file that cannot be parsed, or with a column named twice, raises one LabelError naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise LabelError(f"{path}: a folder, not a {what}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    csv = path.suffix.lower() == ".csv"
    options = dict(header=None, keep_default_na=False, na_values=[""])
    try:
        if csv:
            text = path.read_text(encoding="utf-8-sig")
            lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as pandas splits them
            lead = next((i for i, line in enumerate(lines) if filled(line.replace(",", "").replace('"', ""))), 0)
            if ";" in lines[lead] and "," not in lines[lead]:  # Excel's CSV where the decimal mark is a comma
                raise LabelError(f"{path}: line {lead + 1} is separated by semicolons, not commas (as Excel saves CSV "
                                 "where the decimal mark is a comma): save it as an Excel Workbook (.xlsx)")
            cells = pd.read_csv(io.StringIO(text), skiprows=lead, skip_blank_lines=False, dtype=str, **options)
            cells.index += lead
        else:
            sheets = check_span(path)
            cells = pd.read_excel(path, dtype=object, **options)
            cells.attrs["sheets"] = sheets
    except LabelError:
        raise
    except UnicodeDecodeError as err:
        raise LabelError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                         "save it as UTF-8 CSV") from None
    except pd.errors.EmptyDataError:
        raise LabelError(f"{path}: empty file") from None
    except pd.errors.ParserError as err:
        raise LabelError(f"{path}: not a readable CSV file ({csv_problem(err)})") from None
    except Exception as err:  # zip, XML and CSV parsers fail in many ways; all mean the same to the user
        raise LabelError(f"{path}: not a readable {'CSV' if csv else 'xlsx'} file "
                         f"({type(err).__name__}: {err}){'' if csv else f'; {SAVE_AS}'}") from None
    cells.index += 1  # rows as a spreadsheet numbers them
    blank = ~cells.map(filled).any(axis=1)
    if blank.all():
        raise LabelError(f"{path}: empty file{first_sheet_note(cells)}")
    header = cells.loc[blank.idxmin()]
    columns = [f"Unnamed: {i}" if pd.isna(h) else str(h) for i, h in enumerate(header)]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise LabelError(f"{path}: column(s) named twice in the header (row {header.name}): {twice}")
    below = cells.loc[header.name + 1:]
    df = below[~blank.loc[below.index]].set_axis(columns, axis=1)
    if "img_name" in df:
        df["img_name"] = df["img_name"].map(lambda v: v if pd.isna(v) else str(v))
    for c in df.columns.drop("img_name", errors="ignore") if csv else ():  # no tool rewrites a CSV
        df[c] = df[c].map(_number)
    return df


NUMBER = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")  # no "nan", "0_1", "١", "０"


def _number(cell):
    """A CSV cell as the number it writes ("2" -> 2, "1.5" -> 1.5; "true"/"false", as pandas and Excel write
    booleans, -> 1/0), else as it is ("yes", "nan")."""
    if not isinstance(cell, str):
        return cell
    if cell.strip().lower() in ("true", "false"):
        return int(cell.strip().lower() == "true")
    if NUMBER.fullmatch(cell):
        return int(cell) if cell.strip().lstrip("+-").isdigit() else float(cell)
    return cell


def name_problem(name):
    """Why ``name`` is not a plain relative path that stays inside the images folder, else None."""
    if "\\" in name or "\0" in name:
        return "contains a backslash or NUL"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):  # a line break would also shift CSV row numbers
        return "contains a control character (a line break, a tab, ...)"
    if PurePosixPath(name).is_absolute():
        return "is an absolute path"
    if PureWindowsPath(name).drive:  # labels files travel between systems
        return f"starts with a Windows drive ({PureWindowsPath(name).drive}), which leaves the folder on Windows"
    if ".." in PurePosixPath(name).parts:
        return "contains a '..' part"
    return None


def unicode_twin(root, name):
    """A file in ``root`` whose name is ``name`` in the other Unicode normal form (macOS writes names decomposed,
    spreadsheets usually hold them composed), or None."""
    return next((t for t in (unicodedata.normalize(f, name) for f in ("NFC", "NFD"))
                 if t != name and (root / t).is_file()), None)


def image_problem(root, name, shown):
    """Why the file ``name`` is not an image file inside the resolved folder ``root`` (``shown`` as the user named
    it), else None."""
    try:
        outside = not (root / name).resolve().is_relative_to(root)
        found = (root / name).is_file()
    except OSError as err:  # a name too long for the file system
        return f"image file cannot be looked up in {shown} ({err.strerror or err})"
    except RuntimeError:
        return "image is a symlink loop"
    if outside:
        return f"image resolves outside {shown}"
    if not found:
        twin = unicode_twin(root, name)
        return f"image file not found in {shown}" + (f" ({twin!r} is there: the same name in another Unicode "
                                                      "normalization; rename one)" if twin else "")
    return None


def read_labels(path, images_dir=None, partial=False):
    """Read a labels spreadsheet (xlsx, or UTF-8 csv) with columns ``img_name`` and ``target`` (1 open, 0 closed).

    Names are matched exactly as written (never stripped: `` a.jpg`` and ``a.jpg`` are two files) and must be
    plain relative paths inside the images folder (no absolute path, no ``..`` part, no backslash, no control
    character); this is checked before any file is touched. When ``images_dir`` is given, the image of every
    labelled row must be a file inside it (a symlink that resolves outside is refused; a name missing only in its
    Unicode normal form is pointed out).

    Returns ``img_name`` (str) and ``target`` (int). ``partial=True`` reads a file still being labelled (the
    studio's): a target may be blank (nullable Int64), the 0/1 columns FLAGS are read (blank or missing: 0), an
    unsure row has no target, other columns are kept, an empty table is allowed and names must be in their plain
    form (``a.jpg``, not ``./a.jpg``).
    Raises LabelError naming the bad rows (numbered as in the file: the first line or row is 1).
    """
    path = Path(path)
    df = read_sheet(path)
    missing = {"img_name", "target"} - set(df.columns)
    if missing:
        raise LabelError(f"{path}: missing column(s) {sorted(missing)}; found {list(df.columns)}"
                         f"{first_sheet_note(df)}")
    if df.empty and not partial:
        raise LabelError(f"{path}: no rows")
    cols = ("target",) + (FLAGS if partial else ())
    raw = {c: df[c] if c in df.columns else pd.Series(np.nan, index=df.index) for c in cols}
    values = {c: pd.to_numeric(raw[c], errors="coerce") for c in cols}
    raw = {c: raw[c].tolist() for c in cols}  # Python values, for the messages
    unsure = pd.to_numeric(df.get("unsure", pd.Series(np.nan, index=df.index)), errors="coerce")
    names, root = df["img_name"], None if images_dir is None else Path(images_dir).resolve()
    rows, named = df.index, name_problems(names)
    problems = []
    for i, name in enumerate(names):
        if not filled(name):
            problems.append(named[i])
            continue
        where = f"row {rows[i]} ({name})"
        for c in cols:
            if not (values[c].iloc[i] in (0, 1) or (partial and pd.isna(raw[c][i]))):
                got = (f"{raw[c][i]!r} is not 0, 1" + (" or blank" if partial else "") if pd.notna(raw[c][i]) else
                       "is blank: the studio marked the image unsure (label it there, or delete the row, to use "
                       "this file)" if unsure.iloc[i] == 1 else
                       "is blank (not labelled yet, or a formula or error cell with no saved value)")
                problems.append(f"{where}: {c} {got}")
        if partial and values["unsure"].iloc[i] == 1 and pd.notna(values["target"].iloc[i]):
            problems.append(f"{where}: unsure is 1 but target is set")
        if i in named:
            problems.append(named[i])
        if partial and str(PurePosixPath(name)) != name:  # the studio would write "./a.jpg" as a second row
            problems.append(f"{where}: write it as {PurePosixPath(name)}")
        if why := name_problem(name):
            problems.append(f"{where}: img_name {why}; it must be a relative path inside the images folder")
        elif root is not None and (not partial or pd.notna(values["target"].iloc[i])):
            if why := image_problem(root, name, images_dir):
                problems.append(f"{where}: {why}")
    if problems:
        raise LabelError.rows(path, problems)
    if not partial:
        return pd.DataFrame({"img_name": names, "target": values["target"].astype(int)}).reset_index(drop=True)
    out = pd.DataFrame({"img_name": names, "target": values["target"].astype("Int64")})
    for c in FLAGS:
        out[c] = values[c].fillna(0).astype(int)
    return pd.concat([out, df[[c for c in df.columns if c not in out.columns]]], axis=1).reset_index(drop=True)


def images_folder(root=None, images_dir=None):
    """``images_dir``, or the data folder's EyesDataset/ (see data_dir); a missing one, or a file, is refused."""
    folder = Path(images_dir) if images_dir else data_dir(root) / IMAGES_FOLDER
    if not folder.is_dir():
        raise (ValueError(f"not a folder: {folder}") if folder.exists() else
               FileNotFoundError(f"image folder not found: {folder}"))
    return folder


def dataset_paths(root=None, labels=None, images_dir=None):
    """The image folder and the labels file that ``load_dataset`` reads (see images_folder and labels_file)."""
    return images_folder(root, images_dir), labels_file(labels, root, images_dir)


def load_dataset(root=None, labels=None, limit=None, images_dir=None):
    """Images (N x 24 x 24 uint8), targets (N,) and names of a labelled folder.

    ``root`` is the data folder (see data_dir) holding EyesDataset/; ``images_dir``: another image folder in its
    place (whose labels ``labels`` must then name); ``labels`` is the spreadsheet (default: see labels_file). ``limit``
    keeps a stratified subset (for smoke runs).
    """
    folder, labels = dataset_paths(root, labels, images_dir)
    df = read_labels(labels, images_dir=folder)
    if limit and limit < len(df):
        try:
            df, _ = train_test_split(df, train_size=limit, stratify=df["target"], random_state=0)
        except ValueError as err:  # sklearn: the images left out must hold one of each class
            raise ValueError(f"limit {limit} of {len(df)} images: {err}; use {len(df)} for all of them") from None
    images = np.stack([load_image(folder / n) for n in df["img_name"]])
    return images, df["target"].to_numpy(), df["img_name"].tolist()


def read_annotations(names, root=None):
    """Extra human labels of the images ``names`` from ``other_annotations.csv`` in the data folder (``img_name``
    and one 0/1 column per annotator, blank where that person skipped the image): an N x A float array, NaN where
    an image has no label from that annotator. Raises LabelError naming the bad rows."""
    path = data_dir(root) / ANNOTATIONS_NAME
    df = read_sheet(path, "annotations file")
    cols = [c for c in df.columns if c != "img_name"]
    if "img_name" not in df.columns or not cols:
        raise LabelError(f"{path}: needs an img_name column and one column per annotator; found {list(df.columns)}")
    values, names_ = df[cols].apply(pd.to_numeric, errors="coerce"), df["img_name"]
    problems = list(name_problems(names_).values())
    problems += [f"row {df.index[i]} ({names_.iloc[i]}): {c} {df[c].iloc[i]!r} is not 0, 1 or blank"
                 for c in cols for i in np.flatnonzero(~(values[c].isin([0, 1]) | df[c].isna()))]
    if problems:
        raise LabelError.rows(path, problems)
    names = list(names)
    if names and not set(names) & set(names_):
        raise LabelError(f"{path}: lists none of the {len(names)} labelled images (e.g. {names[0]!r}; it lists "
                         f"{names_.iloc[0] if len(names_) else 'no image'!r}): not the annotations of these images")
    return values.set_index(df["img_name"]).reindex(names).to_numpy(float)


def check_annotated(root=None, images_dir=None):
    """Refuse (ValueError) an image folder ``images_dir`` other than the data folder's EyesDataset/: the extra
    annotators' labels are those of its images, and other images may share their file names."""
    eyes = data_dir(root) / IMAGES_FOLDER
    if images_dir is not None and not (Path(images_dir).is_dir() and os.path.samefile(images_dir, eyes)):
        raise ValueError(f"soft labels: the extra annotators' labels ({eyes.parent / ANNOTATIONS_NAME}) are those "
                         f"of {eyes}, not of the images in {images_dir}")


def soft_targets(targets, names, root=None):
    """Each image's share of "open" among all its labels: its target and the extra annotators' (read_annotations),
    matched by file name: the images must be the data folder's EyesDataset/ (see check_annotated)."""
    return np.nanmean(np.column_stack([np.asarray(targets, float), read_annotations(names, root)]), axis=1)


def split(targets, seed=0, val=0.15, test=0.15):
    """Deterministic stratified train/val/test index arrays."""
    idx = np.arange(len(targets))
    rest, test_idx = train_test_split(idx, test_size=test, stratify=targets, random_state=seed)
    train_idx, val_idx = train_test_split(rest, test_size=val / (1 - test), stratify=targets[rest],
                                          random_state=seed)
    return train_idx, val_idx, test_idx


def validation_split(idx, targets, fraction, seed):
    """Stratified (train, validation) parts of the indices ``idx``. Refuses parts without both classes: the
    validation part picks the epoch, the temperature and the threshold, which need an image of each."""
    idx, y = np.asarray(idx), np.asarray(targets)[idx]
    counts = f"{int(np.sum(y == 1))} open and {int(np.sum(y == 0))} closed images"
    def refuse(name, size):
        raise ValueError(f"val_fraction {fraction} of {counts} leaves the {name} part ({size} image"
                         f"{'' if size == 1 else 's'}) without an image of each class; label more images of the "
                         "smaller class or change the fraction")
    try:
        train, val = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    except ValueError:  # sklearn: a part smaller than the number of classes, or a class of one image
        n_val = math.ceil(fraction * len(idx))  # sklearn's size of the test part
        refuse(*min(("validation", n_val), ("training", len(idx) - n_val), key=lambda part: part[1]))
    for part, name in ((val, "validation"), (train, "training")):
        if len(np.unique(np.asarray(targets)[part])) < 2:
            refuse(name, len(part))
    return train, val


def kfold(targets, folds=5, seed=0):
    """Stratified k-fold (train_idx, test_idx) pairs."""
    smaller = int(min(np.sum(np.asarray(targets) == c) for c in (0, 1)))
    if folds > smaller:
        raise ValueError(f"{folds} folds: each fold needs an image of each class, and the smaller class has "
                         f"{smaller} images")
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(targets)), targets))


def image_hash(image):
    """A short content hash of a 24x24 uint8 image (what the model sees), to recognise training images."""
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()[:16]


def image_hashes(images):
    """The sorted image_hash of each image: what a checkpoint lists as its training or validation images."""
    return sorted({image_hash(im) for im in images})


def to_tensor(images):
    """uint8 images (N x 24 x 24) as the normalized N x 1 x 24 x 24 float tensor the models take."""
    return torch.from_numpy(normalize(images))


RESAMPLE = ("nearest", "bilinear")
PADDING = ("zeros", "border")


ERASE_SCALE = (0.02, 0.2)  # random erasing: the rectangle's share of the image


def augmentation(strength=1.0, invert=0.0, resample="nearest", erase=0.0, zoom=0.1):
    """Training augmentation on uint8 1x24x24 tensors: flips, shifts, small rotations, zooms by a factor in
    1 ± ``zoom`` (``resample``: how they interpolate), light and blur (``strength`` scales them all; 0: none of
    these), then colour inversion with probability ``invert``, then with probability ``erase`` a random rectangle
    (2-20% of the image) set to the dataset's mean grey; None when all three are 0."""
    s = strength
    if not (s or invert or erase):
        return None
    return v2.Compose([
        *([v2.RandomHorizontalFlip(),
           v2.RandomAffine(degrees=10 * s, translate=(0.1 * s, 0.1 * s), scale=(1 - zoom * s, 1 + zoom * s),
                           interpolation=v2.InterpolationMode[resample.upper()]),
           v2.ColorJitter(brightness=0.4 * s, contrast=0.4 * s),
           v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2 * s)] if s else []),
        v2.RandomInvert(p=invert),
        *([v2.RandomErasing(p=erase, scale=ERASE_SCALE, value=round(255 * MEAN))] if erase else []),
    ])


def batch_augmentation(strength=1.0, invert=0.0, resample="nearest", erase=0.0, zoom=0.1, pad="zeros",
                       affine_p=0.5):
    """The augmentation for whole batches (float N x 1 x H x W, values in [0, 1]) on their own device, each image
    with its own random parameters (kornia), so training never augments image by image. One difference from
    ``augmentation``: the shift, rotation and zoom apply to an image with probability ``affine_p`` (kornia's
    default 0.5), where the image-by-image path transforms every image. ``pad``: what fills the borders that
    they open (zeros: black; border: the edge pixels repeated). None when all three are 0."""
    import kornia.augmentation as K  # training only: prediction does not need it
    s = strength
    if not (s or invert or erase):
        return None
    return torch.nn.Sequential(
        *([K.RandomHorizontalFlip(),
           K.RandomAffine(degrees=10 * s, translate=(0.1 * s, 0.1 * s), scale=(1 - zoom * s, 1 + zoom * s),
                          resample=resample, padding_mode=pad, p=affine_p),
           K.ColorJitter(brightness=0.4 * s, contrast=0.4 * s),
           K.RandomGaussianBlur((3, 3), sigma=(0.1, 1.0), p=0.2 * s)] if s else []),
        *([K.RandomInvert(p=invert)] if invert else []),
        *([K.RandomErasing(scale=ERASE_SCALE, value=MEAN, p=erase)] if erase else []),
    )


class EyeDataset(torch.utils.data.Dataset):
    """uint8 images + targets in [0, 1]; yields (normalized 1x24x24 float tensor, float target)."""

    def __init__(self, images, targets, transform=None):
        self.images = torch.as_tensor(np.asarray(images), dtype=torch.uint8).unsqueeze(1)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return standardize(x.float()), self.targets[i]
