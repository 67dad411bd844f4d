"""The studio's labels spreadsheet: atomic saves after every change, and conflict checks so that two browser tabs
never overwrite each other's labels silently.

Columns: ``img_name``, ``target`` (1 open, 0 closed, blank: not labeled), ``unsure`` (1: skipped as unsure, target
blank), ``reviewed`` (1: checked in a review queue) and one 0/1 column per tag in TAGS; other columns are kept as
values (a formula cell keeps only the value the file stores for it). A workbook with other sheets or cell comments
is refused: a save would drop them.
The file is read by the project's one labels reader, ``data.read_labels(path, partial=True)``. Names are written
as text cells, exactly as the image files are named (a name starting with ``=`` is text, never a formula), so a
save and a load give back every name byte for byte.
"""
import hashlib
import os
import re
import reprlib
import tempfile
import threading
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
from openpyxl.cell import WriteOnlyCell

from . import data
from .data import FLAGS, TAGS
from .files import atomic_write, locked
from .preprocess import subfolder_hint

STATE_KEYS = {"target", "unsure", "reviewed", "tags"}
LOCK_WAIT_S = 10.0  # a save waits this long for another one's lock, then fails (the page keeps its changes, retries)


def unwritable(ch):
    """A character of a file name that an xlsx cell (XML) cannot hold, or that this project refuses in a name:
    control characters, U+FFFE and U+FFFF, and the surrogates that stand for bytes that are not UTF-8."""
    o = ord(ch)
    return o < 32 or o == 127 or 0xD800 <= o <= 0xDFFF or o in (0xFFFE, 0xFFFF)


def subfolder_images(images_dir, names):
    """``{name: file}`` of the labelled ``names`` in subfolders of ``images_dir`` (``sub/x.jpg``) whose image file
    resolves inside it. The studio serves these beside the folder's own images and lists no subfolder: an unrelated
    one (``originals/``), or a folder given one level too high, would add every image in it as a new row."""
    root, files = Path(images_dir).resolve(), {}
    for name in (n for n in names if "/" in n):
        file = Path(images_dir) / name
        try:
            if file.suffix.lower() in data.IMAGE_SUFFIXES and file.is_file() and file.resolve().is_relative_to(root):
                files[name] = file
        except (OSError, RuntimeError):  # a name too long for the file system, a symlink loop: kept, not served
            pass
    return files


def blank_table(names):
    """Unlabeled rows for ``names``."""
    df = pd.DataFrame({"img_name": list(names), "target": pd.array([pd.NA] * len(names), dtype="Int64")})
    for col in FLAGS:
        df[col] = 0
    return df


def text_cell(sheet, value):
    """A string cell stored as text and quote-prefixed: neither openpyxl nor Excel reads ``=...`` as a formula."""
    cell = WriteOnlyCell(sheet, value)
    cell.data_type, cell.quotePrefix = "s", True
    return cell


def write_xlsx(df, path):
    """Write a DataFrame to xlsx with openpyxl's streaming writer (strings as text, blank cells for missing)."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("labels")
    sheet.append([text_cell(sheet, str(c)) for c in df.columns])
    for row in df.astype(object).itertuples(index=False):
        sheet.append([text_cell(sheet, v) if isinstance(v, str) else None if pd.isna(v) else v for v in row])
    book.save(path)


def stamp(content):
    """What tells a version of the file apart from another program's: its bytes (a copy can keep the modification
    time and size; a chmod, a hard link or an extended attribute changes nothing that matters)."""
    return hashlib.sha256(content).hexdigest()


def cell_comments(path):
    """``{cell: text}`` of the comments (notes) in an xlsx file's first sheet, which a save would drop; openpyxl
    reads the file only when its zip holds a comments part."""
    with zipfile.ZipFile(path) as book:
        if not any(n.startswith(("xl/comments", "xl/threadedComments")) for n in book.namelist()):
            return {}
    sheet = openpyxl.load_workbook(path).worksheets[0]
    return {c.coordinate: c.comment.text for row in sheet.iter_rows() for c in row if c.comment}


def same_table(content, other):
    """Whether two versions (xlsx bytes) of a labels file hold the same table, cell for cell, the same sheets and
    the same cell comments (a sheet or comment added would be lost at the next save)."""
    with tempfile.TemporaryDirectory() as tmp:
        read = []
        for k, version in enumerate((content, other)):
            path = Path(tmp) / f"{k}.xlsx"
            path.write_bytes(version)
            try:
                with pd.ExcelFile(path) as book:
                    sheets = book.sheet_names
                read.append((sheets, cell_comments(path), data.read_labels(path, partial=True)))
            except (ValueError, OSError, zipfile.BadZipFile):  # not a labels table (any more)
                return False
    return read[0][:2] == read[1][:2] and read[0][2].equals(read[1][2])


def check_writable(path):
    """Refuse a labels file, or the folder it is saved in, that is read-only (no permission, or no write bit at
    all: root could replace such a file, but its owner asked for it to stay as it is); a missing folder is made. A
    symlink's target is the file that saves replace."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.parent) if path.exists() else (path.parent,):
        if not os.access(p, os.W_OK) or not p.stat().st_mode & 0o222:
            raise PermissionError(f"{p} is read-only, and the studio saves every change into {path} (by writing a "
                                  "new file beside it): make it writable, or pass another --labels file")


def remove_stale_temporaries(path):
    """Delete the temporaries that an interrupted save of ``path`` (a symlink's target) left beside it
    (``.<name>.<random part>.tmp``, as files.atomic_write names them; not ``.<name>.csv.<random>.tmp``, another
    file's); under the save lock, so never those of another studio's save in progress."""
    path = Path(os.path.realpath(path))
    ours = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")
    with locked(path, LOCK_WAIT_S):
        for tmp in path.parent.iterdir():
            if ours.fullmatch(tmp.name) and tmp.is_file():
                tmp.unlink()


def normalize(state, where="state"):
    """A row state ``{target: 0|1|null, unsure: bool, reviewed: bool, tags: [..]}`` with exactly these keys and
    JSON types (``"no"`` is not a boolean, ``1.0`` not a target); tags in TAGS order, as ``states`` gives."""
    if not isinstance(state, dict) or set(state) != STATE_KEYS:
        raise ValueError(f"{where}: expected an object with the keys {sorted(STATE_KEYS)}, got {reprlib.repr(state)}")
    target, tags = state["target"], state["tags"]
    if not (target is None or type(target) is int and target in (0, 1)):
        raise ValueError(f"{where}: target {reprlib.repr(target)} is not 0, 1 or null")
    for key in ("unsure", "reviewed"):
        if type(state[key]) is not bool:
            raise ValueError(f"{where}: {key} {reprlib.repr(state[key])} is not true or false")
    if not isinstance(tags, list) or not all(type(t) is str and t in TAGS for t in tags):
        raise ValueError(f"{where}: tags {reprlib.repr(tags)} are not a list of {list(TAGS)}")
    if state["unsure"] and target is not None:
        raise ValueError(f"{where}: an unsure image has no target")
    return dict(target=target, unsure=state["unsure"], reviewed=state["reviewed"], tags=[t for t in TAGS if t in tags])


class FileChanged(OSError):
    """Another program changed the labels file since the studio read or saved it."""


class LabelStore:
    """The labels of the images in one folder, saved atomically to an xlsx after every change.

    A missing file is created listing every image of the folder; images missing from an existing file are added
    as unlabeled rows (written at the next save); rows naming an image in a subfolder are served (subfolder_images);
    rows without an image in the folder are kept but not served.
    A read-only file or folder is refused at start, and temporaries of an interrupted save are removed. A save
    refuses to overwrite the file if another program changed it since it was read or saved here (saves take turns
    through a lock file, ``.<name>.lock``, that stays beside it).
    """

    def __init__(self, path, images_dir):
        self.path, self.root = Path(path), Path(images_dir).resolve()
        if self.path.suffix.lower() != ".xlsx":
            raise ValueError(f"labels file must be an .xlsx file: {self.path}")
        if self.path.is_dir():
            raise ValueError(f"{self.path}: a folder, not a labels file")
        own = {p.name: p for p in data.list_images(images_dir)}  # new rows come from these alone
        if not own and not self.path.exists():  # a new file would list nothing: refuse before creating anything
            raise ValueError(f"no image files in {images_dir}{subfolder_hint(images_dir)}")
        why = {n: "has control characters, U+FFFE, U+FFFF or bytes that are not UTF-8" if any(map(unwritable, n))
               else data.name_problem(n) for n in own}
        odd = [f"{n!r} {w}" for n, w in why.items() if w]
        if odd:
            raise ValueError(f"{images_dir}: {len(odd)} image name(s) that a labels file cannot hold, e.g. "
                             f"{'; '.join(odd[:3])}: rename them")
        check_writable(self.path)
        remove_stale_temporaries(self.path)
        with locked(self.path, LOCK_WAIT_S):  # no studio saves while this one reads; the stamp comes first, so
            # that a change by another program during the read makes the first save refuse instead of overwriting it
            created = not self.path.exists()
            self.saved = None if created else self.path.read_bytes()  # the version read: a save checks against it
            self.stamp = None if created else stamp(self.saved)
            df = blank_table(own) if created else data.read_labels(self.path, partial=True)
            if not created:
                with pd.ExcelFile(self.path) as book:
                    if len(book.sheet_names) > 1:
                        raise ValueError(f"{self.path} has {len(book.sheet_names)} sheets {book.sheet_names}; the "
                                         "studio rewrites the file and would drop all but the first: give it a file "
                                         "with the labels sheet only")
                notes = cell_comments(self.path)
                if notes:
                    raise ValueError(f"{self.path} has comments (notes) in {len(notes)} cell(s), e.g. "
                                     f"{', '.join(list(notes)[:3])}; the studio rewrites the file and would drop "
                                     "them: move them into a column of their own (its cells are kept), or delete "
                                     "them")
        known = set(df["img_name"])
        self.files = {**own, **subfolder_images(images_dir, known)}
        if not self.files:
            raise ValueError(f"no image files in {images_dir}{subfolder_hint(images_dir)}")
        df = pd.concat([df, blank_table([n for n in self.files if n not in known])], ignore_index=True)
        self.df = df.set_index("img_name")
        self.given = self.df["target"].copy()  # the labels the file held when the studio opened it
        self.orphans = sorted(known - set(self.files))
        self.lock = threading.RLock()
        self.recovery, self.refused = None, {}  # where the labels go when another program changed the file
        if created:
            self.save()

    def image(self, name):
        """The file of a listed image, or None when ``name`` is not listed or its file (e.g. a symlink changed since
        the start) now resolves outside the folder."""
        file = self.files.get(name) if isinstance(name, str) else None
        return file if file is not None and file.resolve().is_relative_to(self.root) else None

    def state(self, name):
        return self.states([name])[name]

    def states(self, names):
        """``{name: {target: 0|1|None, unsure, reviewed: bool, tags: [..]}}`` as of now."""
        with self.lock:
            df = self.df.loc[list(names), ["target", *FLAGS]].copy()
        return {name: dict(target=None if pd.isna(r.target) else int(r.target), unsure=bool(r.unsure),
                           reviewed=bool(r.reviewed), tags=[t for t in TAGS if getattr(r, t)])
                for name, r in zip(df.index, df.itertuples(index=False))}

    def save(self):
        """Write the table under the save lock, so that two studios on one file cannot both pass ``write``'s check
        and overwrite each other."""
        with locked(self.path, LOCK_WAIT_S):
            self.write()

    def write(self):
        """Write the table, unless another program changed the file since it was read or saved here (checked
        before the new file is written and again just before it replaces the old one); the caller holds the save
        lock. A refused change is kept by ``write_rows`` (see ``keep_refused``)."""
        self.check_unchanged()
        written = []

        def write(tmp):  # stamped before it replaces the file: whatever comes after is another program's
            write_xlsx(self.df.reset_index(), tmp)
            written.append(Path(tmp).read_bytes())
            self.check_unchanged()  # a save by another program while this file was written is not overwritten
        atomic_write(self.path, write)
        self.saved, self.stamp = written[0], stamp(written[0])

    def check_unchanged(self):
        """Raise FileChanged if another program changed, moved or deleted the file since it was read or saved here.
        A save that changed no cell of the table (a spreadsheet program's Ctrl+S on the file as it was) is no
        change: the studio goes on from that version."""
        changed = f"{self.path} was changed by another program; restart the studio to load that version"
        if self.stamp is None:  # no file when this store started
            if self.path.exists():
                raise FileChanged(changed)
            return
        if not self.path.exists():
            raise FileChanged(f"{self.path} was moved or deleted by another program; put it back there to save "
                              "again, or restart the studio")
        content = self.path.read_bytes()
        if stamp(content) != self.stamp:
            if not same_table(content, self.saved):
                raise FileChanged(changed)
            self.saved, self.stamp = content, stamp(content)

    def keep_refused(self, table, names):
        """After a save refused by FileChanged: ``table`` (the labels with the refused change of rows ``names``)
        and every change refused before go to ``<name>.unsaved-<n>.xlsx`` beside the file (one per studio, updated
        by each refusal), so that the restart the message asks for loses none of them; returns that file."""
        self.refused.update({n: table.loc[n].copy() for n in names})
        table = table.copy()
        for n, row in self.refused.items():
            table.loc[n, row.index] = row.to_numpy()
        if self.recovery is None:
            self.recovery = next(p for k in range(1, 10 ** 6) if not (p := self.path.with_name(
                f"{self.path.stem}.unsaved-{k}.xlsx")).exists())
        atomic_write(self.recovery, lambda tmp: write_xlsx(table.reset_index(), tmp))
        return self.recovery

    def apply(self, changes):
        """Apply ``[{name, before, after}]`` in order and save once.

        A change applies only if ``before`` equals the row's current state (else it is a conflict and skipped).
        Returns ``(applied_names, refused)``, refused: the indices in ``changes`` of the conflicts. If the save fails
        nothing changes, in memory or on disk.
        """
        parsed = []
        for i, c in enumerate(changes):
            if not isinstance(c, dict) or set(c) != {"name", "before", "after"}:
                raise ValueError(f"change {i}: expected an object with the keys name, before, after")
            if self.image(c["name"]) is None:
                raise ValueError(f"change {i}: {reprlib.repr(c['name'])} is not an image of this folder")
            parsed.append((c["name"], normalize(c["before"], f"change {i} before"),
                           normalize(c["after"], f"change {i} after")))

        def sort():  # (the rows after the changes that apply, their names, the indices of the others)
            current = self.states({name for name, _, _ in parsed})
            applied, refused = [], []
            for i, (name, before, after) in enumerate(parsed):
                if current[name] != before:
                    refused.append(i)
                    continue
                current[name] = after
                applied.append(name)
            return current, applied, refused
        with self.lock:
            _, applied, refused = sort()
        if not applied:  # nothing to save: answered at once, even while another program holds the file
            return applied, refused
        # the save lock before the table's: while another program holds it, the table stays readable (the page, a
        with locked(self.path, LOCK_WAIT_S), self.lock:  # second tab); sorted again, as of now
            current, applied, refused = sort()
            if applied:
                self.write_rows({name: current[name] for name in applied})
            return applied, refused

    def write_rows(self, states):
        """Set the rows of ``{name: state}`` and save (the caller holds the save lock); on a failed save the table
        is left as it was. A label that replaces one the file held when the studio opened it (a review flipping it,
        or marking it unsure) keeps that one in an ``original`` column, cleared when the label comes back to it."""
        old, names = self.df.copy(), list(states)
        self.keep_originals({n: states[n]["target"] for n in names})
        self.df.loc[names, "target"] = pd.array([states[n]["target"] for n in names], dtype="Int64")
        for flag in ("unsure", "reviewed"):
            self.df.loc[names, flag] = [int(states[n][flag]) for n in names]
        for tag in TAGS:
            self.df.loc[names, tag] = [int(tag in states[n]["tags"]) for n in names]
        try:
            self.write()
        except FileChanged as err:
            table, self.df = self.df, old
            raise FileChanged(f"{err} (this studio's whole table, the refused labels included, is in "
                              f"{self.keep_refused(table, names)}: copy the rows you need from it)") from None
        except BaseException:
            self.df = old
            raise

    def keep_originals(self, targets):
        """Before ``{name: new target}`` are set: where a row's original label (its ``original`` cell, else the
        label the file held when the studio opened it) is replaced, record it in ``original`` (the column is added
        then); where the new target is that label again, clear it. Labels first set here replace nothing."""
        for n, t in targets.items():
            first = self.df["original"][n] if "original" in self.df else pd.NA
            base = first if pd.notna(first) else self.given[n]
            if pd.isna(base):
                continue
            if t is not None and pd.to_numeric(base, errors="coerce") == t:  # a "1" typed as text is 1
                if pd.notna(first):
                    self.df.at[n, "original"] = pd.NA
                continue
            if "original" not in self.df:
                self.df["original"] = pd.array([pd.NA] * len(self.df), dtype="Int64")
            self.df.at[n, "original"] = base
