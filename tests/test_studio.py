"""Labeling studio: the labels store (tolerant reading, atomic saves, resume, conflicts) and the HTTP server."""
import http.client
import io
import json
import os
import re
import threading

import numpy as np
import openpyxl
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from eye_clf import files, labels_store, studio
from eye_clf.__main__ import main
from eye_clf.data import LabelError, read_labels
from eye_clf.labels_store import LabelStore
from eye_clf.predict import predict_proba
from eye_clf.studio import MAX_CHANGES, Studio, label_order, make_server, pace, read_review

BLANK = dict(target=None, unsure=False, reviewed=False, tags=[])


def eye(is_open, seed=0):
    """A synthetic 24x24 eye: a dark pupil in a light ellipse (open) or an eyelid line (closed)."""
    img = Image.new("L", (24, 24), 150 + seed % 60)
    draw = ImageDraw.Draw(img)
    if is_open:
        draw.ellipse((4, 7, 19, 17), fill=225, outline=60)
        draw.ellipse((9, 8, 15, 16), fill=25)
    else:
        draw.arc((3, 2, 20, 14), 20, 160, fill=35, width=2)
    return img


@pytest.fixture
def folder(tmp_path):
    """tmp/images with 6 eyes, a text file and a broken .jpg; a secret file beside the folder."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        eye(i % 2, i).save(images / f"{i:03d}.png")
    (images / "notes.txt").write_text("not an image")
    (images / "broken.jpg").write_text("not a jpeg")
    (tmp_path / "secret.txt").write_text("secret")
    return images


def change(name, before, **after):
    return dict(name=name, before=before, after=dict(before, **after))


def read_table(path):
    """The studio's labels file as the one labels reader reads it (blank targets allowed)."""
    return read_labels(path, partial=True)


def test_new_file_lists_every_image(folder, tmp_path):
    store = LabelStore(tmp_path / "labels.xlsx", folder)
    df = read_table(tmp_path / "labels.xlsx")
    assert list(df["img_name"]) == ["000.png", "001.png", "002.png", "003.png", "004.png", "005.png", "broken.jpg"]
    assert df["target"].isna().all() and (df[list(labels_store.FLAGS)] == 0).all().all()
    assert store.state("000.png") == BLANK


def test_existing_file_keeps_labels_extra_columns_and_orphans(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    pd.DataFrame({"img_name": ["001.png", "000.png", "gone.png"], "target": [1, None, 0],
                  "note": ["checked", None, "x"]}).to_excel(path, index=False)
    store = LabelStore(path, folder)
    assert store.orphans == ["gone.png"]
    assert store.state("001.png")["target"] == 1 and store.state("002.png") == BLANK
    store.apply([change("000.png", BLANK, target=0, tags=["glasses"])])
    df = read_table(path).set_index("img_name")
    assert df.loc["001.png", "note"] == "checked" and df.loc["gone.png", "target"] == 0
    assert df.loc["000.png", "target"] == 0 and df.loc["000.png", "glasses"] == 1
    assert len(df) == 8  # 3 old rows + the 5 images that were not listed


def test_read_table_names_every_bad_row(tmp_path):
    path = tmp_path / "bad.xlsx"
    pd.DataFrame({"img_name": ["a.png", "b.png", "b.png", "c.png", None],
                  "target": [2, 1, 0, None, 1], "unsure": [0, 1, 0, 0, 0],
                  "dark": [0, 0, 0, "yes", 0]}).to_excel(path, index=False)
    with pytest.raises(LabelError) as err:
        read_table(path)
    msg = str(err.value)
    for part in ("row 2 (a.png): target 2", "row 3 (b.png): duplicate", "row 4 (b.png): duplicate",
                 "row 3 (b.png): unsure is 1 but target is set", "row 5 (c.png): dark 'yes'", "row 6: img_name"):
        assert part in msg


def test_labels_are_saved_and_resume_skips_done_rows(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    first = Studio(LabelStore(path, folder))
    assert first.start() == 0
    status, answer = first.change([change("000.png", BLANK, target=1), change("001.png", BLANK, unsure=True)])
    assert status == 200 and answer["applied"] == ["000.png", "001.png"]
    assert answer["progress"]["done"] == 2 and answer["progress"]["labeled"] == 1
    resumed = Studio(LabelStore(path, folder))  # a new server on the same file
    assert resumed.order[resumed.start()] == "002.png"
    assert resumed.store.state("000.png")["target"] == 1 and resumed.store.state("001.png")["unsure"]


def test_a_changed_label_keeps_its_original(folder, tmp_path):
    """Reviewing a copy of given labels: a flipped or unsure label keeps the given one in ``original``; labelling a
    blank row or coming back to the original records nothing."""
    path = tmp_path / "labels.xlsx"
    pd.DataFrame({"img_name": ["000.png", "001.png"], "target": [1, 0]}).to_excel(path, index=False)
    store = LabelStore(path, folder)
    given = dict(BLANK, target=1)
    store.apply([change("000.png", given, target=0, reviewed=True),
                 change("001.png", dict(BLANK, target=0), target=None, unsure=True, reviewed=True),
                 change("002.png", BLANK, target=1)])
    table = read_table(path).set_index("img_name")
    assert table.loc["000.png", ["target", "original"]].tolist() == [0, 1]
    assert pd.isna(table.loc["001.png", "target"]) and table.loc["001.png", "original"] == 0
    assert pd.isna(table.loc["002.png", "original"])  # first labelled here: nothing replaced
    store.apply([change("000.png", dict(given, target=0, reviewed=True), target=1)])  # back to the given label
    store.apply([change("002.png", dict(BLANK, target=1), target=0)])  # a label of this session corrected
    store.apply([change("003.png", BLANK, target=1)])
    store.apply([change("003.png", dict(BLANK, target=1), target=None)])  # undone in another request
    table = read_table(path).set_index("img_name")
    assert table["original"].dropna().to_dict() == {"001.png": 0}  # 000 came back, 002 and 003 replaced nothing
    again = LabelStore(path, folder)  # reopened: what the file holds now is what a change replaces
    again.apply([change("002.png", dict(BLANK, target=0), target=1)])
    assert again.df.loc["002.png", "original"] == 0 and again.df.loc["001.png", "original"] == 0
    again.df["original"] = again.df["original"].astype(object)
    again.df.loc["001.png", "original"] = "0"  # typed as text in a spreadsheet
    again.apply([change("001.png", dict(BLANK, unsure=True, reviewed=True), target=0, unsure=False)])
    assert pd.isna(again.df.loc["001.png", "original"])  # back to its original, text or not


def test_failed_save_keeps_the_old_file_and_state(folder, tmp_path, monkeypatch):
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, folder)
    store.apply([change("000.png", BLANK, target=1)])
    saved = path.read_bytes()

    def crash(df, tmp):  # the process dies half-way through writing
        open(tmp, "wb").write(b"PK half an xlsx")
        raise OSError("disk full")

    monkeypatch.setattr(labels_store, "write_xlsx", crash)
    with pytest.raises(OSError, match="disk full"):
        store.apply([change("001.png", BLANK, target=0)])
    assert path.read_bytes() == saved
    assert store.state("001.png") == BLANK and store.state("000.png")["target"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".labels.xlsx.lock", "images", "labels.xlsx", "secret.txt"]


def test_edits_by_another_program_are_not_overwritten(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, folder)
    pd.DataFrame({"img_name": ["000.png"], "target": [0]}).to_excel(path, index=False)  # e.g. saved from Excel
    edited = path.read_bytes()
    with pytest.raises(OSError, match="changed by another program"):
        store.apply([change("001.png", BLANK, target=1)])
    assert path.read_bytes() == edited and store.state("001.png") == BLANK


def test_a_save_by_another_program_while_the_studio_writes_is_not_overwritten(folder, tmp_path, monkeypatch):
    """Another program's save (Excel, a script: a new file moved into place) lands while this save builds its new
    file: the check before the rename sees it."""
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, folder)
    other = read_labels(path, partial=True).assign(target=0)
    real = labels_store.write_xlsx

    def write_while_another_saves(df, tmp):
        real(df, tmp)
        if tmp != path:  # (the other program's save itself)
            real(other, tmp_path / "theirs.xlsx")
            os.replace(tmp_path / "theirs.xlsx", path)
    monkeypatch.setattr(labels_store, "write_xlsx", write_while_another_saves)
    with pytest.raises(OSError, match="changed by another program"):
        store.apply([change("001.png", BLANK, target=1)])
    assert read_labels(path, partial=True)["target"].tolist() == [0] * len(other)  # the other program's save
    assert store.state("001.png") == BLANK


def test_a_refused_save_keeps_the_studios_labels_in_a_recovery_file(folder, tmp_path):
    """A stale copy saved over the file (Excel had it open): the studio's labels would be lost with the restart
    that the message asks for, so they are written beside it, the refused change included."""
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, folder)
    stale = path.read_bytes()
    store.apply([change("000.png", BLANK, target=1)])
    path.write_bytes(stale)  # the other program's save of the file as it was before the studio's label
    with pytest.raises(OSError, match=r"whole table, the refused labels included, is in .*labels\.unsaved-1\.xlsx: "
                                      r"copy the rows you need from it\)$"):
        store.apply([change("001.png", BLANK, target=0)])
    with pytest.raises(OSError, match=r"labels\.unsaved-1\.xlsx"):  # one recovery file per studio, kept up to date
        store.apply([change("002.png", BLANK, unsure=True)])
    kept = read_labels(tmp_path / "labels.unsaved-1.xlsx", partial=True).set_index("img_name")
    assert kept.loc["000.png", "target"] == 1 and kept.loc["001.png", "target"] == 0 and kept.loc["002.png", "unsure"]
    assert path.read_bytes() == stale and not (tmp_path / "labels.unsaved-2.xlsx").exists()
    assert store.state("001.png") == BLANK  # the table itself is as the last save left it


def test_a_studio_starting_while_another_holds_the_save_lock_gives_up_with_a_message(folder, tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "labels.xlsx"
    LabelStore(path, folder)
    monkeypatch.setattr(labels_store, "LOCK_WAIT_S", 0.2)
    with open(tmp_path / ".labels.xlsx.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(files.LockTimeout, match="is being saved by another studio or program"):
            LabelStore(path, folder)


def test_a_replacement_with_the_same_modification_time_is_not_overwritten(folder, tmp_path):
    """A copy that keeps the modification time (cp -p, rsync -t, a sync client): the bytes and the table tell."""
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, folder)
    store.apply([change("001.png", BLANK, target=0)])
    other = tmp_path / "other.xlsx"
    table = store.df.reset_index()
    labels_store.write_xlsx(table.assign(target=table["target"].where(table["img_name"] != "001.png", 1)), other)
    st = path.stat()  # (the other version: 001.png open)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)
    assert path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(OSError, match="changed by another program"):
        store.apply([change("002.png", BLANK, target=1)])


def test_metadata_changes_do_not_stop_the_saves(folder, tmp_path):
    """A chmod, a hard link (a backup tool) or a new change time is not another version of the labels."""
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, folder)
    os.chmod(path, 0o640)
    os.link(path, tmp_path / "backup.xlsx")
    store.apply([change("001.png", BLANK, target=1)])
    assert LabelStore(path, folder).state("001.png")["target"] == 1


def test_two_studios_on_one_file_never_both_save_over_the_same_version(folder, tmp_path, monkeypatch):
    """Two stores (as two studio processes) read the same version; while one is writing its save, the other's save
    waits for it and then refuses, instead of both replacing the file and one change silently vanishing."""
    fcntl = pytest.importorskip("fcntl")  # POSIX: elsewhere saves take no lock
    path = tmp_path / "labels.xlsx"
    first, second = LabelStore(path, folder), LabelStore(path, folder)
    writing, second_waits, real, real_flock = threading.Event(), threading.Event(), labels_store.write_xlsx, fcntl.flock

    def flock(f, how):  # tells when the second save finds the lock taken
        try:
            return real_flock(f, how)
        except BlockingIOError:
            if threading.current_thread() is threading.main_thread():
                second_waits.set()
            raise

    def slow_write(df, tmp):  # the first save writes only once the second one waits for its lock
        writing.set()
        assert second_waits.wait(60)
        real(df, tmp)
    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(labels_store, "write_xlsx", slow_write)
    saving = threading.Thread(target=first.apply, args=([change("000.png", BLANK, target=1)],))
    saving.start()
    writing.wait()
    monkeypatch.setattr(labels_store, "write_xlsx", real)
    with pytest.raises(OSError, match="changed by another program"):
        second.apply([change("001.png", BLANK, target=0)])
    saving.join()
    assert LabelStore(path, folder).state("000.png")["target"] == 1 and second.state("001.png") == BLANK


def test_a_studio_starting_while_another_saves_never_overwrites_that_save(folder, tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")  # POSIX: elsewhere saves take no lock
    path = tmp_path / "labels.xlsx"
    first = LabelStore(path, folder)
    real = labels_store.data.read_labels

    held, saving = [], threading.Thread(target=first.apply, args=([change("000.png", BLANK, target=1)],))

    def read_then_let_the_other_save(*args, **kwargs):  # the other studio saves just after this one has read
        table = real(*args, **kwargs)
        with open(tmp_path / ".labels.xlsx.lock", "a") as lock:  # the save lock, held through this read
            with pytest.raises(BlockingIOError):
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(True)
        saving.start()  # its save waits for this read's lock
        return table
    monkeypatch.setattr(labels_store.data, "read_labels", read_then_let_the_other_save)
    second = LabelStore(path, folder)
    assert held == [True]
    monkeypatch.setattr(labels_store.data, "read_labels", real)
    saving.join(60)  # the first studio's save lands
    assert not saving.is_alive() and first.state("000.png")["target"] == 1
    with pytest.raises(OSError, match="changed by another program"):
        second.apply([change("001.png", BLANK, target=0)])
    assert LabelStore(path, folder).state("000.png")["target"] == 1


def test_a_labels_file_created_by_another_studio_meanwhile_is_not_overwritten(folder, tmp_path, monkeypatch):
    """This studio found no file and builds a blank one; another creates the file and saves a label meanwhile."""
    path = tmp_path / "labels.xlsx"
    real = labels_store.blank_table

    def blank_table_while_another_creates_the_file(names):
        table = real(names)
        if len(table) and not path.exists():
            labels_store.write_xlsx(table.assign(target=[1] + [None] * (len(table) - 1)), path)
        return table
    monkeypatch.setattr(labels_store, "blank_table", blank_table_while_another_creates_the_file)
    with pytest.raises(OSError, match="changed by another program"):
        LabelStore(path, folder)
    monkeypatch.setattr(labels_store, "blank_table", real)
    assert LabelStore(path, folder).state("000.png")["target"] == 1


def test_other_columns_keep_their_cells_through_a_save(folder, tmp_path):
    import openpyxl
    path = tmp_path / "labels.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["img_name", "target", "code", "flag", "count"])
    book.active.append(["000.png", 1, "007", "TRUE", 3])
    book.save(path)
    LabelStore(path, folder).apply([change("001.png", BLANK, target=0)])
    rows = list(openpyxl.load_workbook(path).active.values)
    first = dict(zip(rows[0], rows[1]))
    assert first["code"] == "007" and first["flag"] == "TRUE" and first["count"] == 3, first


def test_stale_temporaries_of_a_symlinked_labels_file_are_removed_beside_its_target(folder, tmp_path):
    real, link = tmp_path / "real" / "labels.xlsx", tmp_path / "links" / "labels.xlsx"
    real.parent.mkdir()
    link.parent.mkdir()
    LabelStore(real, folder)
    link.symlink_to(real)
    stale, unrelated = real.parent / ".labels.xlsx.k3j2_x.tmp", link.parent / ".labels.xlsx.zzz.tmp"
    for f in (stale, unrelated):
        f.write_bytes(b"PK half an xlsx")
    LabelStore(link, folder).apply([change("000.png", BLANK, target=1)])
    assert not stale.exists() and unrelated.exists() and link.is_symlink()
    assert read_table(real).set_index("img_name").loc["000.png", "target"] == 1


def test_workbook_with_other_sheets_is_refused(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    with pd.ExcelWriter(path) as xl:
        pd.DataFrame({"img_name": ["000.png"], "target": [1]}).to_excel(xl, sheet_name="labels", index=False)
        pd.DataFrame({"notes": ["keep me"]}).to_excel(xl, sheet_name="notes", index=False)
    with pytest.raises(ValueError, match="2 sheets"):
        LabelStore(path, folder)


def test_workbook_with_cell_comments_is_refused_and_a_comment_added_meanwhile_is_not_overwritten(folder, tmp_path):
    import openpyxl
    from openpyxl.comments import Comment
    path = tmp_path / "labels.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["img_name", "target"])
    book.active.append(["000.png", 1])
    book.active["B2"].comment = Comment("closed? ask Ann", "me")
    book.save(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"has comments \(notes\) in 1 cell\(s\), e\.g\. B2; the studio rewrites"):
        LabelStore(path, folder)
    assert path.read_bytes() == before
    book.active["B2"].comment = None
    book.save(path)
    store = LabelStore(path, folder)
    book.active["A2"].comment = Comment("added in Excel while the studio runs", "me")
    book.save(path)
    with_comment = path.read_bytes()
    with pytest.raises(OSError, match="changed by another program"):
        store.apply([change("001.png", BLANK, target=0)])
    assert path.read_bytes() == with_comment


def test_stale_change_is_a_conflict_not_an_overwrite(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    server = Studio(LabelStore(path, folder))
    server.change([change("002.png", BLANK, target=1)])  # tab a
    # tab b loaded the page earlier: it still shows 002.png unlabeled
    status, answer = server.change([change("002.png", BLANK, target=0), change("003.png", BLANK, target=0)])
    assert status == 409 and answer["applied"] == ["003.png"] and answer["refused"] == [0]
    assert answer["conflicts"] == [dict(name="002.png", **dict(BLANK, target=1), p=None)]
    df = read_table(path).set_index("img_name")
    assert df.loc["002.png", "target"] == 1 and df.loc["003.png", "target"] == 0
    # tab b's own label of 002.png, refused, then a tag on the label it found there, saved: the page is told which
    # change was refused, so that undo reverses the saved one only
    status, answer = server.change([change("002.png", BLANK, target=1), change("002.png", dict(BLANK, target=1),
                                                                               tags=["dark"])])
    assert status == 409 and answer["applied"] == ["002.png"] and answer["refused"] == [0]
    assert answer["conflicts"] == [dict(name="002.png", **dict(BLANK, target=1, tags=["dark"]), p=None)]


@pytest.mark.parametrize("bad, why", [
    (dict(name="../secret.txt", before=BLANK, after=BLANK), r": '\.\./secret\.txt' is not an image of this folder"),
    (dict(name="notes.txt", before=BLANK, after=BLANK), r": 'notes\.txt' is not an image of this folder"),
    (change("000.png", BLANK, target=2), r" after: target 2 is not 0, 1 or null"),
    (change("000.png", BLANK, target=1, unsure=True), r" after: an unsure image has no target"),
    (change("000.png", BLANK, tags=["sunglasses"]), r" after: tags \['sunglasses'\] are not a list of"),
    (dict(name="000.png", before=BLANK), r": expected an object with the keys name, before, after"),
])
def test_invalid_change_is_refused_whole(folder, tmp_path, bad, why):
    store = LabelStore(tmp_path / "labels.xlsx", folder)
    with pytest.raises(ValueError, match=rf"^change 1{why}"):  # the second change, the bad one, is named
        store.apply([change("001.png", BLANK, target=1), bad])
    assert store.state("001.png") == BLANK  # and the good one before it is not applied either
    store.apply([change("001.png", BLANK, target=1)])  # (which alone applies)
    assert store.state("001.png")["target"] == 1


def test_orders_resume_and_review(folder, tmp_path):
    p = {"000.png": 0.9, "001.png": 0.45, "002.png": 0.02, "003.png": 0.6, "004.png": 0.5, "005.png": 0.99,
         "broken.jpg": 0.3}
    assert label_order(p, p)[:3] == ["004.png", "001.png", "003.png"]
    store = LabelStore(tmp_path / "labels.xlsx", folder)
    assisted = Studio(store, p)
    assert assisted.order[0] == "004.png" and assisted.grid[:2] == ["005.png", "002.png"]
    review_csv = tmp_path / "review.csv"
    pd.DataFrame({"img_name": ["003.png", "000.png"], "target": [0, 1], "p_open": [0.9, 0.1], "rank": [2, 1],
                  "score": [0.1, 0.1]}).to_csv(review_csv, index=False)
    review = Studio(store, review=read_review(review_csv, store.files))
    assert review.order == ["000.png", "003.png"] and review.start() == 0
    review.change([change("000.png", BLANK, target=1, reviewed=True)])
    assert review.start() == 1 and review.progress()["done"] == 1
    items = review.items()["items"]
    assert items[1]["given"] == 0 and items[1]["rank"] == 2 and items[1]["p"] == 0.9
    pd.DataFrame({"img_name": ["zzz.png"], "target": [0], "p_open": [0.9], "rank": [1], "score": [0.1]}).to_csv(
        review_csv, index=False)
    with pytest.raises(ValueError, match="not in the image folder"):
        read_review(review_csv, store.files)


def test_pace_caps_pauses():
    assert pace([(0.0, 1)]) is None
    assert pace([(0.0, 1), (2.0, 1), (4.0, 2)]) == pytest.approx(4.0 / 3)
    assert pace([(0.0, 1), (500.0, 1)], idle=30) == 30.0  # a coffee break counts as 30 s


def test_checkpoint_predictions(folder, tmp_path, tiny_ckpt):
    """Every readable image gets the model's P(open) of it; the broken one none (the page still shows it)."""
    p = studio.predictions(LabelStore(tmp_path / "labels.xlsx", folder).files, tiny_ckpt)
    names = [f"{i:03d}.png" for i in range(6)]
    assert sorted(p) == names
    expected = predict_proba([folder / n for n in names], checkpoint=tiny_ckpt)
    assert np.allclose([p[n] for n in names], expected) and np.ptp(expected) > 0  # (the images differ)


def test_a_save_held_up_by_another_lock_fails_with_a_timeout_and_changes_nothing(folder, tmp_path, monkeypatch):
    """Another studio (or a stuck network disk) holds the save lock: the save gives up after LOCK_WAIT_S instead of
    freezing the studio, the page is answered 503 (it keeps the changes and sends them again) and nothing changed."""
    fcntl = pytest.importorskip("fcntl")  # POSIX: elsewhere saves take no lock
    path = tmp_path / "labels.xlsx"
    srv = make_server(Studio(LabelStore(path, folder)), port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setattr(labels_store, "LOCK_WAIT_S", 0.3)
    saved = path.read_bytes()
    try:
        with open(tmp_path / ".labels.xlsx.lock", "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            status, answer = post(srv, {"changes": [change("000.png", BLANK, target=1)]})
            assert status == 503 and "is being saved by another studio or program" in answer["error"]
            assert srv.studio.store.state("000.png") == BLANK and path.read_bytes() == saved
        status, _ = post(srv, {"changes": [change("000.png", BLANK, target=1)]})  # sent again once it is free
        assert status == 200 and LabelStore(path, folder).state("000.png")["target"] == 1

        def network_disk_timeout(*args):  # an OS timeout (ETIMEDOUT) is a failed save, not a busy lock
            raise TimeoutError("timed out")
        monkeypatch.setattr(srv.studio.store, "write", network_disk_timeout)
        status, answer = post(srv, {"changes": [change("001.png", BLANK, target=1)]})
        assert status == 500 and "could not save" in answer["error"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_labels_stay_readable_while_a_save_waits_for_another_lock(folder, tmp_path, monkeypatch):
    """A save waiting for another program's save lock does not hold the table's lock meanwhile, so the page (and
    a second tab) can still read the labels and progress."""
    fcntl = pytest.importorskip("fcntl")
    store = LabelStore(tmp_path / "labels.xlsx", folder)
    waiting = threading.Event()

    def locked(path, timeout=None):  # files.locked, telling the test when the save starts to wait
        waiting.set()
        return files.locked(path, timeout)
    monkeypatch.setattr(labels_store, "locked", locked)
    monkeypatch.setattr(labels_store, "LOCK_WAIT_S", 60.0)  # far longer than the test holds the lock
    with open(tmp_path / ".labels.xlsx.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        saving = threading.Thread(target=store.apply, args=([change("000.png", BLANK, target=1)],))
        saving.start()
        try:
            assert waiting.wait(60)
            assert store.state("000.png") == BLANK
            assert store.apply([change("000.png", dict(BLANK, target=0), target=1)]) == ([], [0])  # a conflict, at once
            assert saving.is_alive()  # both answered while the save still waits, not after it gave up
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
            saving.join()
    assert store.state("000.png")["target"] == 1  # then the save lands


@pytest.fixture
def server(folder, tmp_path):
    srv = make_server(Studio(LabelStore(tmp_path / "labels.xlsx", folder)), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(server, method, path, body=None, headers=None, full=False):
    """A raw HTTP request (the path is sent exactly as given, unlike a browser) with the Host and, for a POST, the
    Origin a browser on the studio's page sends; ``headers`` values of None leave a header out."""
    own = f"127.0.0.1:{server.server_address[1]}"
    headers = {"Host": own, **({"Origin": f"http://{own}"} if method == "POST" else {}), **(headers or {})}
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for key, value in headers.items():
        if value is not None:
            conn.putheader(key, value)
    conn.endheaders(body.encode() if isinstance(body, str) else body)
    res = conn.getresponse()
    out = res.status, (res.headers if full else res.getheader("Content-Type")), res.read()
    conn.close()
    return out


def post(server, body, headers=None):
    """POST /api/changes; returns (status, decoded JSON answer)."""
    if not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    body = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    status, _, out = request(server, "POST", "/api/changes", body, headers)
    return status, json.loads(out)


@pytest.mark.parametrize("path,status", [
    ("/img/../secret.txt", 404), ("/img/%2e%2e/secret.txt", 404), ("/img/%2E%2E%2Fsecret.txt", 404),
    ("/img/..%5csecret.txt", 404), ("/img//etc/passwd", 404), ("/img/%2Fetc%2Fpasswd", 404),
    ("/../secret.txt", 404), ("/secret.txt", 404), ("/img/", 404), ("/img/notes.txt", 404),
    ("/img/missing.png", 404), ("/img/000.png/..", 404), ("/img/broken.jpg", 400),
])
def test_only_listed_images_are_served(server, path, status):
    assert request(server, "GET", path)[0] == status


def test_image_page_and_items(server):
    status, ctype, body = request(server, "GET", "/img/001.png")
    assert status == 200 and ctype == "image/png" and Image.open(io.BytesIO(body)).size == (24, 24)
    status, ctype, body = request(server, "GET", "/")
    assert status == 200 and ctype.startswith("text/html") and b"eye_clf studio" in body
    items = json.loads(request(server, "GET", "/api/items")[2])
    assert items["start"] == 0 and len(items["items"]) == 7 and items["progress"]["total"] == 7
    assert request(server, "GET", "/", headers={"Host": "attacker.example"})[0] == 400


def test_labelled_images_in_subfolders_are_served_and_unrelated_subfolders_left_alone(folder, tmp_path,
                                                                                     monkeypatch):
    for sub, name in (("left", "000.png"), ("rejected", "x.png"), ("left", "unlabelled.png")):
        (folder / sub).mkdir(exist_ok=True)
        eye(1).save(folder / sub / name)
    (tmp_path / "elsewhere.png").write_bytes((folder / "000.png").read_bytes())
    (folder / "left" / "out.png").symlink_to(tmp_path / "elsewhere.png")
    path = tmp_path / "labels.xlsx"  # labels as training and the audit name them, an image of a subfolder too
    pd.DataFrame({"img_name": ["000.png", "left/000.png", "left/out.png"], "target": [0, pd.NA, 1]}).to_excel(
        path, index=False)
    store = LabelStore(path, folder)
    assert "left/000.png" in store.files and not {"rejected/x.png", "left/unlabelled.png"} & set(store.files)
    assert store.orphans == ["left/out.png"]  # resolves outside the folder: kept, not served
    assert len(read_table(path)) == 3  # no subfolder's image became a row
    srv = make_server(Studio(store), port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert request(srv, "GET", "/img/left%2F000.png")[0] == 200
        assert request(srv, "GET", "/img/rejected%2Fx.png")[0] == 404
        assert post(srv, {"changes": [change("left/000.png", BLANK, target=1)]})[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()
    assert read_table(path).set_index("img_name").loc["left/000.png", "target"] == 1
    review = tmp_path / "review.csv"  # the audit's review list names it the same way; the studio starts on it
    review.write_text("img_name,target,p_open,rank,score\nleft/000.png,1,0.2,1,0.8\n")
    made = []

    def no_serving(*args):  # serve returns at once, as after Ctrl+C
        made.append(make_server(*args))
        made[-1].serve_forever = lambda: (_ for _ in ()).throw(KeyboardInterrupt)
        return made[-1]
    monkeypatch.setattr(studio, "make_server", no_serving)
    studio.serve(folder, path, review=review, open_browser=False)
    assert made[0].studio.order == ["left/000.png"]


def test_a_folder_without_images_of_its_own_or_labelled_ones_is_refused_before_anything_is_written(folder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files in"):
        LabelStore(tmp_path / "new" / "labels.xlsx", tmp_path / "empty")
    assert not (tmp_path / "new").exists()  # no folder, no lock file
    LabelStore(tmp_path / "labels.xlsx", folder)  # labels of the folder's images ...
    with pytest.raises(ValueError, match=r"no image files in .* \(its subfolder images/ holds images, which are not "
                                         "read"):  # ... with the folder above it: none is there
        LabelStore(tmp_path / "labels.xlsx", tmp_path)
    pd.DataFrame({"img_name": ["000.png"], "target": ["x"]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match="labels file must be an .xlsx file"):  # not the CSV's bad row first
        studio.serve(folder, tmp_path / "labels.csv", open_browser=False, model=False)


def test_changes_over_http(server, tmp_path):
    ok = {"changes": [change("005.png", BLANK, target=0, tags=["dark"])]}
    assert post(server, ok)[0] == 200
    status, answer = post(server, ok)  # the same change again: the row is no longer blank
    assert status == 409 and answer["conflicts"][0]["target"] == 0
    assert post(server, ok, {"Content-Type": "text/plain"})[0] == 415
    assert post(server, "{not json")[0] == 400
    assert post(server, {"changes": [change("nope.png", BLANK, target=1)]})[0] == 400
    df = read_table(tmp_path / "labels.xlsx").set_index("img_name")
    assert df.loc["005.png", "target"] == 0 and df.loc["005.png", "dark"] == 1
    assert np.isnan(df["target"].astype(float)).sum() == 6


# ---- names, files and the labels file on disk ----------------------------------------------------------------

ODD_NAMES = ['=HYPERLINK("x","click").png', "=1+1.png", " lead.png", "trail .png", "+1.png", "@x.png", "-x.png",
             "NA.png", "é ü.png"]


def test_names_round_trip_exactly_and_are_never_formulas(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(ODD_NAMES + ["lead.png"]):  # "lead.png" and " lead.png" are two files
        eye(i % 2, i).save(images / name, "PNG")
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, images)
    store.apply([change(n, BLANK, target=i % 2) for i, n in enumerate(ODD_NAMES)])
    sheet = openpyxl.load_workbook(path).active
    cells = {c.value: c for c in sheet["A"][1:]}
    assert set(cells) == set(ODD_NAMES) | {"lead.png"}
    assert all(c.data_type == "s" and c.quotePrefix for c in cells.values())  # text, never a formula
    restarted = LabelStore(path, images)  # the studio accepts its own file again
    assert restarted.orphans == [] and restarted.state("lead.png") == BLANK
    assert [restarted.state(n)["target"] for n in ODD_NAMES] == [i % 2 for i in range(len(ODD_NAMES))]


@pytest.mark.parametrize("name, why", [("a\rb.png", "control characters"), ("a\\b.png", "backslash"),
                                       ("a\ufffe.png", "U\\+FFFE"), ("a\uffff.png", "U\\+FFFF"),
                                       (os.fsdecode(b"a\xff.png"), "not UTF-8"),
                                       ("c:eye.png", "Windows drive \\(c:\\)")])
def test_image_names_a_labels_file_cannot_hold_are_refused(folder, tmp_path, name, why):
    """Control characters, backslashes, what XML cannot hold (U+FFFE, U+FFFF, a name that is not UTF-8) and a
    name that would leave the folder on Windows; the message says which."""
    eye(1).save(folder / name, "PNG")
    with pytest.raises(ValueError, match=f"image name.* a labels file cannot hold, e.g. .*{why}"):
        LabelStore(tmp_path / "labels.xlsx", folder)
    assert not (tmp_path / "labels.xlsx").exists()


def test_a_labels_row_naming_an_image_another_way_is_refused(folder, tmp_path):
    """"./001.png" and "001.png" are one file to the labels reader: the studio would save two rows for it."""
    path = tmp_path / "labels.xlsx"
    pd.DataFrame({"img_name": ["000.png", "./001.png"], "target": [0, 1]}).to_excel(path, index=False)
    with pytest.raises(ValueError, match=r"row 3 \(\./001\.png\): write it as 001\.png"):
        LabelStore(path, folder)


def test_concurrent_changes_count_each_label_once(folder, tmp_path):
    s = Studio(LabelStore(tmp_path / "labels.xlsx", folder))
    names = s.order[:6]
    threads = [threading.Thread(target=s.change, args=([change(n, s.store.state(n), target=1)],)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(k for _, k in s.events) == len(names) == s.progress()["done"]


def test_images_are_served_upright_as_their_exif_orientation_says(folder):
    stored = np.zeros((24, 24), np.uint8)
    stored[:, :12] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90 degrees clockwise: the white left half goes on top
    Image.fromarray(stored).save(folder / "phone.png", exif=exif)
    shown = np.asarray(Image.open(io.BytesIO(studio.png(folder / "phone.png"))))
    assert shown[:12].mean() > 250 and shown[12:].mean() < 5


def test_an_image_with_unreadable_exif_is_shown_as_stored_as_the_model_reads_it(folder):
    stored = np.tile(np.arange(24, dtype=np.uint8) * 10, (24, 1))
    Image.fromarray(stored).save(folder / "odd.png", exif=b"Exif\x00\x00not a TIFF header")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(studio.png(folder / "odd.png")))), stored)


@pytest.mark.parametrize("target", ["file", "folder"])
def test_read_only_labels_file_or_folder_is_refused(folder, tmp_path, target):
    where = tmp_path / "out"
    where.mkdir()
    path = where / "labels.xlsx"
    LabelStore(path, folder)
    saved = path.read_bytes()
    locked = path if target == "file" else where
    locked.chmod(0o444 if target == "file" else 0o555)
    try:
        with pytest.raises(PermissionError, match=f"{locked} is read-only"):
            LabelStore(path, folder)
    finally:
        locked.chmod(0o644 if target == "file" else 0o755)
    assert path.read_bytes() == saved


def test_stale_temporaries_of_this_file_are_removed_at_start(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    LabelStore(path, folder)
    stale = [tmp_path / ".labels.xlsx.k3j2_x.tmp", tmp_path / ".labels.xlsx.9.tmp"]
    others = [tmp_path / ".other.xlsx.k3j2_x.tmp", tmp_path / "labels.xlsx.tmp",
              tmp_path / ".labels.xlsx.csv.k3j2_x.tmp"]  # the last: a temporary of labels.xlsx.csv
    for f in stale + others:
        f.write_bytes(b"PK half an xlsx")
    LabelStore(path, folder)
    assert not any(f.exists() for f in stale) and all(f.exists() for f in others)


def test_labels_file_with_paths_outside_the_folder_is_refused(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    pd.DataFrame({"img_name": ["000.png", "../secret.txt", "/etc/passwd"], "target": [1, 0, 1]}).to_excel(
        path, index=False)
    with pytest.raises(LabelError, match=r"row 3 \(../secret.txt\).*\n.*row 4 \(/etc/passwd\)"):
        LabelStore(path, folder)


@pytest.mark.parametrize("bad", [
    dict(BLANK, unsure="no"), dict(BLANK, reviewed=1), dict(BLANK, target=1.0), dict(BLANK, target=True),
    dict(BLANK, tags="dark"), dict(BLANK, tags=[["dark"]]), dict(BLANK, extra=1),
    {k: v for k, v in BLANK.items() if k != "tags"},
])
def test_field_types_are_strict(folder, tmp_path, bad):
    store = LabelStore(tmp_path / "labels.xlsx", folder)
    with pytest.raises(ValueError, match="change 0 after"):
        store.apply([dict(name="000.png", before=BLANK, after=bad)])
    assert store.state("000.png") == BLANK


def test_several_tags_do_not_make_a_false_conflict(folder, tmp_path):
    store = LabelStore(tmp_path / "labels.xlsx", folder)
    store.apply([change("000.png", BLANK, tags=["dark", "blurry"])])
    tagged = store.state("000.png")
    assert tagged["tags"] == ["dark", "blurry"]
    assert store.apply([change("000.png", tagged, target=1)]) == (["000.png"], [])


def test_a_batch_applies_in_order_and_saves_once(folder, tmp_path, monkeypatch):
    store = LabelStore(tmp_path / "labels.xlsx", folder)
    saves = []
    monkeypatch.setattr(store, "write", lambda: saves.append(1))
    states = [dict(BLANK, target=i % 2) for i in range(MAX_CHANGES)]
    batch = [dict(name="000.png", before=a, after=b) for a, b in zip([BLANK] + states, states)]
    batch.append(change("001.png", BLANK, unsure=True))
    applied, conflicts = store.apply(batch)
    assert len(applied) == MAX_CHANGES + 1 and conflicts == [] and len(saves) == 1
    assert store.state("000.png") == states[-1] and store.state("001.png")["unsure"]


# ---- model suggestions -----------------------------------------------------------------------------------------

def test_unreadable_images_get_no_suggestion_and_come_first(folder, tmp_path, tiny_ckpt):
    p = studio.predictions(LabelStore(tmp_path / "labels.xlsx", folder).files, tiny_ckpt)
    assert "broken.jpg" not in p and len(p) == 6
    app = Studio(LabelStore(tmp_path / "labels.xlsx", folder), p, source="tiny.pt")
    assert app.order[0] == "broken.jpg" and app.grid[-1] == "broken.jpg"
    items = app.items()
    assert items["source"] == "tiny.pt" and items["has_model"] and items["items"][0]["p"] is None


class FakeServer:
    server_address = ("127.0.0.1", 0)

    def serve_forever(self):
        pass

    def server_close(self):
        pass


def test_the_studio_names_a_given_model_as_given(folder, tmp_path, monkeypatch, tiny_ckpt):
    (folder / "broken.jpg").unlink()
    made = []
    monkeypatch.setattr(studio, "make_server", lambda app, port: made.append(FakeServer()) or made[-1])
    main(["label", "--images", str(folder), "--labels", str(tmp_path / "labels.xlsx"), "--no-browser",
          "--checkpoint", str(tiny_ckpt)])
    assert made[0].studio.source == str(tiny_ckpt)  # the path, not a bare file name that could be any eye_clf.pt


@pytest.mark.parametrize("flags,source", [([], "eye_clf.pt (shipped)"), (["--no-model"], None)])
def test_label_command_suggests_with_the_shipped_model_by_default(folder, tmp_path, monkeypatch, flags, source):
    (folder / "broken.jpg").unlink()
    made = []
    monkeypatch.setattr(studio, "make_server", lambda app, port: made.append(FakeServer()) or made[-1])
    main(["label", "--images", str(folder), "--labels", str(tmp_path / "labels.xlsx"), "--no-browser", *flags])
    app = made[0].studio
    assert app.source == source and (app.p_open is not None) == (source is not None)
    if source:
        assert sorted(app.p_open) == [f"{i:03d}.png" for i in range(6)]


def test_checkpoint_and_no_model_exclude_each_other(folder, tmp_path, capsys, monkeypatch):
    from eye_clf import studio
    monkeypatch.setattr(studio, "serve", lambda *a, **k: pytest.fail("the studio started"))
    with pytest.raises(SystemExit) as stop:
        main(["label", "--images", str(folder), "--labels", str(tmp_path / "l.xlsx"), "--no-model",
              "--checkpoint", "x.pt"])
    assert stop.value.code == 2 and "--checkpoint: not allowed with argument --no-model" in capsys.readouterr().err


# ---- review lists ----------------------------------------------------------------------------------------------

def test_bad_review_file_is_refused_at_start_naming_file_row_and_value(folder, tmp_path):
    store = LabelStore(tmp_path / "labels.xlsx", folder)
    path = tmp_path / "review.csv"
    pd.DataFrame({"img_name": ["000.png", "001.png", "002.png", "002.png"], "target": [1, 0, 2, 1],
                  "p_open": ["0.1", "abc", "1.5", "0.2"], "rank": [1, 2.5, 3, 4],
                  "score": [0.1, 0.2, "x", 0.3]}).to_csv(path, index=False)
    with pytest.raises(LabelError) as err:
        read_review(path, store.files)
    msg = str(err.value)
    assert msg.startswith(str(path))
    for part in ("row 3 (001.png): p_open 'abc' is not a number in 0..1", "row 3 (001.png): rank 2.5 is not an integer",
                 "row 4 (002.png): target 2 is not 0 or 1", "row 4 (002.png): p_open 1.5 is not",
                 "row 4 (002.png): score 'x' is not a number", "row 5 (002.png): duplicate img_name"):
        assert part in msg
    assert "row 2 " not in msg


# ---- HTTP: bad requests, origins, framing ----------------------------------------------------------------------

@pytest.mark.parametrize("length,status", [("abc", 400), ("-5", 400), ("", 400), ("1e3", 400),
                                           (str(10 ** 12), 413), ("0", 400)])
def test_bad_content_length_is_answered(server, length, status):
    code, _, out = request(server, "POST", "/api/changes", b"{}", {"Content-Type": "application/json",
                                                                  "Content-Length": length})
    assert code == status and "error" in json.loads(out)


def test_deeply_nested_json_is_answered(server):
    status, answer = post(server, "[" * 100_000 + "]" * 100_000)
    assert status == 400 and "JSON" in answer["error"]
    status, answer = post(server, {"changes": {"a": 1}})
    assert status == 400 and "changes" in answer["error"]


def test_too_many_changes_are_refused_whole(server, tmp_path):
    saved = (tmp_path / "labels.xlsx").read_bytes()
    states = [dict(BLANK, target=i % 2) for i in range(MAX_CHANGES + 1)]
    batch = [dict(name="000.png", before=a, after=b) for a, b in zip([BLANK] + states, states)]
    status, answer = post(server, {"changes": batch})
    assert status == 413 and f"at most {MAX_CHANGES}" in answer["error"]
    assert (tmp_path / "labels.xlsx").read_bytes() == saved
    status, answer = post(server, {"changes": batch[:MAX_CHANGES]})
    assert status == 200 and answer["progress"]["labeled"] == 1


@pytest.mark.parametrize("headers,status", [
    ({"Origin": None}, 403),                                                  # a non-browser client says nothing
    ({"Origin": "http://attacker.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Origin": "http://127.0.0.1:1"}, 403),                                  # another local server
    ({"Origin": None, "Sec-Fetch-Site": "cross-site"}, 403),
    ({"Origin": None, "Sec-Fetch-Site": "same-origin"}, 200),
    ({"Origin": None, "Referer": "http://attacker.example/page"}, 403),
    ({"Origin": None, "Referer": "OWN/"}, 200),
    ({"Host": "localhost:PORT", "Origin": "http://localhost:PORT"}, 200),
    ({"Host": "127.0.0.1"}, 400),                                            # not this port
])
def test_changes_only_from_the_studio_page(server, tmp_path, headers, status):
    port = server.server_address[1]
    headers = {k: v and v.replace("OWN", f"http://127.0.0.1:{port}").replace("PORT", str(port))
               for k, v in headers.items()}
    assert post(server, {"changes": [change("000.png", BLANK, target=1)]}, headers)[0] == status
    target = read_table(tmp_path / "labels.xlsx").set_index("img_name").loc["000.png", "target"]
    assert (target == 1 if status == 200 else pd.isna(target))


@pytest.mark.parametrize("path", ["/", "/api/items", "/img/000.png", "/nope"])
def test_pages_may_not_be_framed(server, path):
    _, headers, _ = request(server, "GET", path, full=True)
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_progress_endpoint_is_gone(server):
    assert request(server, "GET", "/api/progress")[0] == 404


def test_symlink_to_a_file_outside_the_folder_is_not_served(server, folder, tmp_path):
    eye(1).save(tmp_path / "outside.png")
    (folder / "000.png").unlink()
    (folder / "000.png").symlink_to(tmp_path / "outside.png")  # swapped after the studio listed the folder
    assert request(server, "GET", "/img/000.png")[0] == 404
    (folder / "000.png").unlink()
    (folder / "000.png").symlink_to(folder / "001.png")        # a link that stays inside is fine
    assert request(server, "GET", "/img/000.png")[0] == 200
    status, answer = post(server, {"changes": [change("002.png", BLANK, target=1)]})
    assert status == 200


def test_label_finds_the_images_in_the_data_folder(real_root, tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(studio, "make_server", lambda app, port: made.append(FakeServer()) or made[-1])
    main(["label", "--data", str(real_root), "--labels", str(tmp_path / "l.xlsx"), "--no-browser", "--no-model"])
    assert made[0].studio.store.root == (real_root / "EyesDataset").resolve()


@pytest.fixture
def serve_once(monkeypatch):
    """studio.serve returns at once, as after Ctrl+C, once it has printed its start notes."""
    def no_serving(*args):
        server = make_server(*args)
        server.serve_forever = lambda: (_ for _ in ()).throw(KeyboardInterrupt)
        return server
    monkeypatch.setattr(studio, "make_server", no_serving)


def test_ctrl_c_ends_the_label_command_normally(folder, tmp_path, serve_once, capsys):
    """The studio's Ctrl+C is how it is meant to stop: exit status 0, every label already saved (not 130)."""
    labels = tmp_path / "labels.xlsx"
    assert main(["label", "--images", str(folder), "--labels", str(labels), "--no-model", "--no-browser",
                 "--port", "0"]) is None
    assert labels.is_file() and "interrupted" not in capsys.readouterr().err


@pytest.mark.parametrize("lock", ["~$labels.xlsx", "~$bels.xlsx", ".~lock.labels.xlsx#"])
def test_a_labels_file_open_in_a_spreadsheet_program_is_noted_at_start(lock, folder, tmp_path, serve_once, capsys):
    """Excel and LibreOffice keep a lock file beside a file they have open; their save would overwrite the studio's."""
    labels = tmp_path / "labels.xlsx"
    studio.serve(folder, labels, open_browser=False, model=False)
    assert "looks open" not in capsys.readouterr().out
    (tmp_path / lock).write_bytes(b"")
    studio.serve(folder, labels, open_browser=False, model=False)
    assert f"note: {labels} looks open in a spreadsheet program ({lock} beside it)" in capsys.readouterr().out


def test_the_recovery_files_of_refused_saves_are_noted_at_start(folder, tmp_path, serve_once, capsys):
    """A refused save's labels wait in <name>.unsaved-N.xlsx, which the studio never reads: a restart says so."""
    labels = tmp_path / "labels.xlsx"
    studio.serve(folder, labels, open_browser=False, model=False)
    assert "unsaved" not in capsys.readouterr().out
    for k in (2, 1):
        (tmp_path / f"labels.unsaved-{k}.xlsx").write_bytes(b"")
    (tmp_path / "other.unsaved-1.xlsx").write_bytes(b"")  # another labels file's
    studio.serve(folder, labels, open_browser=False, model=False)
    assert (f"note: labels.unsaved-1.xlsx, labels.unsaved-2.xlsx beside {labels} hold(s) labels that an earlier "
            "studio could not save into it") in capsys.readouterr().out


def test_a_labels_file_moved_away_keeps_the_studios_labels_and_saves_again_once_back(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, folder)
    store.apply([change("000.png", BLANK, target=1)])
    path.rename(tmp_path / "moved.xlsx")
    with pytest.raises(OSError, match=r"labels\.xlsx was moved or deleted by another program; put it back there to "
                                      r"save again, or restart the studio \(.*labels\.unsaved-1\.xlsx"):
        store.apply([change("001.png", BLANK, target=0)])
    kept = read_labels(tmp_path / "labels.unsaved-1.xlsx", partial=True).set_index("img_name")
    assert kept.loc["000.png", "target"] == 1 and kept.loc["001.png", "target"] == 0
    (tmp_path / "moved.xlsx").rename(path)
    store.apply([change("001.png", BLANK, target=0)])
    assert LabelStore(path, folder).state("001.png")["target"] == 0


def test_a_refused_save_is_answered_once_worded_and_printed_where_the_studio_runs(server, tmp_path, capfd):
    path = tmp_path / "labels.xlsx"
    stale = path.read_bytes()
    assert post(server, {"changes": [change("000.png", BLANK, target=1)]})[0] == 200
    path.write_bytes(stale)  # another program's save
    status, answer = post(server, {"changes": [change("001.png", BLANK, target=0)]})
    assert status == 500 and answer["error"].startswith(f"{path} was changed by another program; restart the studio")
    assert f"not saved: {answer['error']}" in capfd.readouterr().err


def test_a_save_by_another_program_that_changed_no_cell_is_not_a_change(folder, tmp_path):
    """Opening the file in a spreadsheet program and saving it unchanged (new bytes, same table) must not stop the
    studio; a changed cell still does."""
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, folder)
    store.apply([change("000.png", BLANK, target=1)])
    before = path.read_bytes()
    book = openpyxl.load_workbook(path)
    book.save(path)  # same cells, other bytes
    assert path.read_bytes() != before
    store.apply([change("001.png", BLANK, target=0)])
    assert [LabelStore(path, folder).state(n)["target"] for n in ("000.png", "001.png")] == [1, 0]
    book = openpyxl.load_workbook(path)
    book.create_sheet("notes")  # the same table and a sheet beside it, which a save would drop
    book.save(path)
    with pytest.raises(OSError, match="changed by another program"):
        store.apply([change("002.png", BLANK, target=0)])
    store = LabelStore(path.with_name("other.xlsx"), folder)
    book = openpyxl.load_workbook(store.path)
    book.active["B2"] = 0  # a label, changed
    book.save(store.path)
    with pytest.raises(OSError, match="changed by another program"):
        store.apply([change("002.png", BLANK, target=0)])


def test_label_refuses_the_reference_labels_and_a_missing_file_to_review(folder, tmp_path, monkeypatch, capsys):
    from eye_clf import data
    monkeypatch.setattr(studio, "serve", lambda *args, **kw: pytest.fail("started the studio"))
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "checkout")
    (tmp_path / "checkout").mkdir()
    (tmp_path / "data").mkdir()
    for reference in (tmp_path / "checkout" / "img_name_target.xlsx", tmp_path / "data" / "img_name_target.xlsx"):
        reference.write_bytes(b"labels")
        for given in (reference, tmp_path / "link.xlsx", tmp_path / "checkout" / ".." / "data" / ".." / "link.xlsx"):
            if given == tmp_path / "link.xlsx":
                given.unlink(missing_ok=True)
                given.symlink_to(reference)  # a save would replace the file it points to
            says = rf"^error: --labels: {re.escape(str(given))} is the reference labels file \({reference}\), which"
            with pytest.raises(SystemExit, match=says + " the studio would rewrite: label a copy"):
                main(["label", "--images", str(folder), "--data", str(tmp_path / "data"), "--labels", str(given)])
        reference.unlink()
    (tmp_path / "link.xlsx").unlink()
    (tmp_path / "checkout" / "img_name_target.xlsx").write_bytes(b"the reference")  # the data folder's differs:
    (tmp_path / "data" / "img_name_target.xlsx").write_bytes(b"labels")  # someone's own dataset, theirs to label
    with pytest.raises(pytest.fail.Exception, match="started the studio"):
        main(["label", "--images", str(folder), "--data", str(tmp_path / "data"), "--labels",
              str(tmp_path / "data" / "img_name_target.xlsx")])
    (tmp_path / "checkout" / "img_name_target.xlsx").unlink()
    os.link(tmp_path / "data" / "img_name_target.xlsx", tmp_path / "hard.xlsx")  # a save replaces it: a copy then
    with pytest.raises(pytest.fail.Exception, match="started the studio"):
        main(["label", "--images", str(folder), "--data", str(tmp_path / "data"), "--labels",
              str(tmp_path / "hard.xlsx")])
    review = tmp_path / "review.csv"
    review.write_text("img_name,target,p_open,rank,score\n000.png,0,0.9,1,0.1\n")
    with pytest.raises(SystemExit, match=r"^error: --labels: .*typo.xlsx does not exist; a review corrects the "):
        main(["label", "--images", str(folder), "--labels", str(tmp_path / "typo.xlsx"), "--review", str(review)])
    assert not (tmp_path / "typo.xlsx").exists()


def test_a_new_labels_file_is_announced(folder, tmp_path, serve_once, capsys):
    labels = tmp_path / "labels.xlsx"
    studio.serve(folder, labels, open_browser=False, model=False)
    assert f"note: {labels} did not exist: created, listing the 7 images, none labelled" in capsys.readouterr().out
    studio.serve(folder, labels, open_browser=False, model=False)
    assert "did not exist" not in capsys.readouterr().out


def test_a_review_list_older_than_the_labels_file_is_noted(folder, tmp_path, serve_once, capsys):
    labels, review = tmp_path / "labels.xlsx", tmp_path / "review.csv"
    pd.DataFrame({"img_name": ["000.png", "001.png"], "target": [1, 0]}).to_excel(labels, index=False)
    review.write_text("img_name,target,p_open,rank,score\n000.png,1,0.1,1,0.1\n001.png,0,0.8,2,0.2\n")
    studio.serve(folder, labels, review=review, open_browser=False)
    assert "note:" not in capsys.readouterr().out
    store = LabelStore(labels, folder)  # a review flips one label: its original keeps the audited one
    store.apply([change("000.png", store.state("000.png"), target=0, reviewed=True)])
    store.apply([change("001.png", store.state("001.png"), target=None, unsure=True, reviewed=True)])  # a blank target
    studio.serve(folder, labels, review=review, open_browser=False)
    assert "note:" not in capsys.readouterr().out
    review.write_text("img_name,target,p_open,rank,score\n000.png,0,0.9,1,0.1\n")  # a new audit of the new label
    studio.serve(folder, labels, review=review, open_browser=False)
    assert "note:" not in capsys.readouterr().out
    pd.DataFrame({"img_name": ["000.png", "001.png"], "target": [1, 1]}).to_excel(labels, index=False)  # changed
    studio.serve(folder, labels, review=review, open_browser=False)
    assert (f"note: 1 image(s) of {review} (000.png) have a label in it that is neither the one {labels} holds "
            "nor one a studio replaced there"
            in capsys.readouterr().out)
    pd.DataFrame({"img_name": ["000.png"], "target": [0]}).to_excel(labels, index=False)  # 001.png's row deleted
    review.write_text("img_name,target,p_open,rank,score\n000.png,0,0.9,1,0.1\n001.png,0,0.8,2,0.2\n")
    studio.serve(folder, labels, review=review, open_browser=False)
    assert f"note: 1 image(s) of {review} (001.png) have a label in it" in capsys.readouterr().out
