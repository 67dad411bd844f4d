"""The studio's labels spreadsheet: a tolerant reader (blank target = not labeled yet), atomic saves after every
change, and conflict checks so that two browser tabs never overwrite each other's labels silently.

Columns: ``img_name``, ``target`` (1 open, 0 closed, blank: not labeled), ``unsure`` (1: skipped as unsure, target
blank), ``reviewed`` (1: checked in a review queue) and one 0/1 column per tag in TAGS. Other columns are kept.
"""
import threading
from pathlib import Path

import openpyxl
import pandas as pd

from . import data
from .data import LabelError
from .train import atomic_write

TAGS = ("dark", "blurry", "glasses", "angle", "inverted", "other")
FLAGS = ("unsure", "reviewed") + TAGS
COLUMNS = ("img_name", "target") + FLAGS


def read_table(path):
    """A labels spreadsheet (xlsx or csv) where targets may be blank.

    Returns a DataFrame with COLUMNS first (target: nullable Int64, flags: int 0/1; missing flag columns are
    added as 0) and any other columns after. Raises LabelError listing every bad row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    read = pd.read_csv if path.suffix.lower() == ".csv" else pd.read_excel
    df = read(path, dtype={"img_name": str})
    missing = {"img_name", "target"} - set(df.columns)
    if missing:
        raise LabelError(f"{path}: missing column(s) {sorted(missing)}; found {list(df.columns)}")
    names = df["img_name"].str.strip()
    empty = names.isna() | (names == "")
    problems = [(i, f"row {i + 2}: img_name is empty") for i in empty.to_numpy().nonzero()[0]]
    dup = names.duplicated(keep=False) & ~empty
    problems += [(i, f"row {i + 2} ({names.iloc[i]}): duplicate img_name") for i in dup.to_numpy().nonzero()[0]]
    out = pd.DataFrame({"img_name": names})
    for col in ("target",) + FLAGS:  # a blank flag means 0
        raw = df[col] if col in df.columns else pd.Series(pd.NA, index=df.index)
        values = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & ~values.isin([0, 1])
        problems += [(i, f"row {i + 2} ({names.iloc[i]}): {col} {raw.tolist()[i]!r} is not 0, 1 or blank")
                     for i in bad.to_numpy().nonzero()[0]]
        values = values.where(~bad)
        out[col] = values.astype("Int64") if col == "target" else values.fillna(0).astype(int)
    both = (out["unsure"] == 1) & out["target"].notna()
    problems += [(i, f"row {i + 2} ({names.iloc[i]}): unsure is 1 but target is set")
                 for i in both.to_numpy().nonzero()[0]]
    if problems:
        lines = [text for _, text in sorted(problems, key=lambda p: p[0])]
        raise LabelError(f"{path}: {len(lines)} problem(s):\n  " + "\n  ".join(lines))
    extra = [c for c in df.columns if c not in COLUMNS]
    return pd.concat([out, df[extra]], axis=1)


def blank_table(names):
    """Unlabeled rows for ``names``."""
    df = pd.DataFrame({"img_name": list(names), "target": pd.array([pd.NA] * len(names), dtype="Int64")})
    for col in FLAGS:
        df[col] = 0
    return df


def write_xlsx(df, path):
    """Write a DataFrame to xlsx with openpyxl's streaming writer (blank cells for missing values)."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("labels")
    sheet.append([str(c) for c in df.columns])
    for row in df.astype(object).itertuples(index=False):
        sheet.append([None if pd.isna(v) else v for v in row])
    book.save(path)


def normalize(state, where="state"):
    """A row state ``{target: 0|1|None, unsure, reviewed: bool, tags: [..]}`` checked and in canonical form."""
    if not isinstance(state, dict):
        raise ValueError(f"{where}: expected an object, got {state!r}")
    target, tags = state.get("target"), state.get("tags", [])
    if target not in (None, 0, 1) or isinstance(target, bool):
        raise ValueError(f"{where}: target {target!r} is not 0, 1 or null")
    if not isinstance(tags, list) or not set(tags) <= set(TAGS):
        raise ValueError(f"{where}: tags {tags!r} are not a list of {list(TAGS)}")
    out = dict(target=target, unsure=bool(state.get("unsure", False)), reviewed=bool(state.get("reviewed", False)),
               tags=sorted(set(tags)))
    if out["unsure"] and target is not None:
        raise ValueError(f"{where}: an unsure image has no target")
    return out


class LabelStore:
    """The labels of the images in one folder, saved atomically to an xlsx after every change.

    A missing file is created listing every image of the folder; images missing from an existing file are added
    as unlabeled rows (written at the next save); rows without an image in the folder are kept but not served.
    A save refuses to overwrite the file if another program changed it since it was read or saved here.
    """

    def __init__(self, path, images_dir):
        self.path = Path(path)
        if self.path.suffix.lower() != ".xlsx":
            raise ValueError(f"labels file must be an .xlsx file: {self.path}")
        self.files = {p.name: p for p in data.list_images(images_dir)}
        if not self.files:
            raise ValueError(f"no image files in {images_dir}")
        created = not self.path.exists()
        if not created and len(sheets := openpyxl.load_workbook(self.path, read_only=True).sheetnames) > 1:
            raise ValueError(f"{self.path} has {len(sheets)} sheets {sheets}; the studio rewrites the file and "
                             "would drop all but the first: give it a file with the labels sheet only")
        self.stamp = None if created else self.file_stamp()
        df = blank_table(self.files) if created else read_table(self.path)
        known = set(df["img_name"])
        df = pd.concat([df, blank_table([n for n in self.files if n not in known])], ignore_index=True)
        self.df = df.set_index("img_name")
        self.orphans = sorted(known - set(self.files))
        self.lock = threading.RLock()
        if created:
            self.save()

    def state(self, name):
        return self.states([name])[name]

    def states(self, names):
        """``{name: {target: 0|1|None, unsure, reviewed: bool, tags: [..]}}`` as of now."""
        with self.lock:
            df = self.df.loc[list(names), ["target", *FLAGS]].copy()
        return {name: dict(target=None if pd.isna(r.target) else int(r.target), unsure=bool(r.unsure),
                           reviewed=bool(r.reviewed), tags=[t for t in TAGS if getattr(r, t)])
                for name, r in zip(df.index, df.itertuples(index=False))}

    def file_stamp(self):
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def save(self):
        if self.stamp is not None and self.file_stamp() != self.stamp:
            raise OSError(f"{self.path} was changed by another program; restart the studio to load that version")
        atomic_write(self.path, lambda tmp: write_xlsx(self.df.reset_index(), tmp))
        self.stamp = self.file_stamp()

    def apply(self, changes):
        """Apply ``[{name, before, after}]`` in order and save once.

        A change applies only if ``before`` equals the row's current state (else it is a conflict and skipped).
        Returns ``(applied_names, conflict_names)``. If the save fails nothing changes, in memory or on disk.
        """
        parsed = []
        for i, c in enumerate(changes):
            name = c.get("name") if isinstance(c, dict) else None
            if name not in self.files:
                raise ValueError(f"change {i}: {name!r} is not an image of this folder")
            parsed.append((name, normalize(c.get("before"), f"change {i} before"),
                           normalize(c.get("after"), f"change {i} after")))
        with self.lock:
            old = self.df.copy()
            applied, conflicts = [], []
            for name, before, after in parsed:
                if self.state(name) != before:
                    conflicts.append(name)
                    continue
                self.df.loc[name, ["target", *FLAGS]] = [
                    pd.NA if after["target"] is None else after["target"], int(after["unsure"]),
                    int(after["reviewed"]), *(int(t in after["tags"]) for t in TAGS)]
                applied.append(name)
            if applied:
                try:
                    self.save()
                except BaseException:
                    self.df = old
                    raise
            return applied, conflicts
