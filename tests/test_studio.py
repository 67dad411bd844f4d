"""Labeling studio: the labels store (tolerant reading, atomic saves, resume, conflicts) and the HTTP server."""
import http.client
import io
import json
import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from eye_clf import labels_store, studio
from eye_clf.data import LabelError
from eye_clf.labels_store import LabelStore, read_table
from eye_clf.studio import Studio, label_order, make_server, pace, read_review

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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "labels.xlsx", "secret.txt"]


def test_edits_by_another_program_are_not_overwritten(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    store = LabelStore(path, folder)
    pd.DataFrame({"img_name": ["000.png"], "target": [0]}).to_excel(path, index=False)  # e.g. saved from Excel
    edited = path.read_bytes()
    with pytest.raises(OSError, match="changed by another program"):
        store.apply([change("001.png", BLANK, target=1)])
    assert path.read_bytes() == edited and store.state("001.png") == BLANK


def test_workbook_with_other_sheets_is_refused(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    with pd.ExcelWriter(path) as xl:
        pd.DataFrame({"img_name": ["000.png"], "target": [1]}).to_excel(xl, sheet_name="labels", index=False)
        pd.DataFrame({"notes": ["keep me"]}).to_excel(xl, sheet_name="notes", index=False)
    with pytest.raises(ValueError, match="2 sheets"):
        LabelStore(path, folder)


def test_stale_change_is_a_conflict_not_an_overwrite(folder, tmp_path):
    path = tmp_path / "labels.xlsx"
    server = Studio(LabelStore(path, folder))
    server.change([change("002.png", BLANK, target=1)])  # tab a
    # tab b loaded the page earlier: it still shows 002.png unlabeled
    status, answer = server.change([change("002.png", BLANK, target=0), change("003.png", BLANK, target=0)])
    assert status == 409 and answer["applied"] == ["003.png"]
    assert answer["conflicts"] == [dict(name="002.png", **dict(BLANK, target=1), p=None)]
    df = read_table(path).set_index("img_name")
    assert df.loc["002.png", "target"] == 1 and df.loc["003.png", "target"] == 0


@pytest.mark.parametrize("bad", [
    dict(name="../secret.txt", before=BLANK, after=BLANK),
    dict(name="notes.txt", before=BLANK, after=BLANK),
    change("000.png", BLANK, target=2),
    change("000.png", BLANK, target=1, unsure=True),
    change("000.png", BLANK, tags=["sunglasses"]),
    dict(name="000.png", before=BLANK),
])
def test_invalid_change_is_refused_whole(folder, tmp_path, bad):
    store = LabelStore(tmp_path / "labels.xlsx", folder)
    with pytest.raises(ValueError):
        store.apply([change("001.png", BLANK, target=1), bad])
    assert store.state("001.png") == BLANK


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
    (folder / "broken.jpg").unlink()
    p = studio.predictions(LabelStore(tmp_path / "labels.xlsx", folder), tiny_ckpt)
    assert sorted(p) == [f"{i:03d}.png" for i in range(6)] and all(0 <= v <= 1 for v in p.values())


@pytest.fixture
def server(folder, tmp_path):
    srv = make_server(Studio(LabelStore(tmp_path / "labels.xlsx", folder)), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(server, method, path, body=None, headers=None):
    """A raw HTTP request (the path is sent exactly as given, unlike a browser)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request(method, path, body=body, headers={"Host": "127.0.0.1", **(headers or {})})
    res = conn.getresponse()
    out = res.status, res.getheader("Content-Type"), res.read()
    conn.close()
    return out


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


def test_changes_over_http(server, tmp_path):
    def post(body, ctype="application/json"):
        status, _, out = request(server, "POST", "/api/changes", body, {"Content-Type": ctype})
        return status, json.loads(out)

    ok = json.dumps({"changes": [change("005.png", BLANK, target=0, tags=["dark"])]})
    assert post(ok)[0] == 200
    status, answer = post(ok)  # the same change again: the row is no longer blank
    assert status == 409 and answer["conflicts"][0]["target"] == 0
    assert post(ok, "text/plain")[0] == 415
    assert post("{not json")[0] == 400
    assert post(json.dumps({"changes": [change("nope.png", BLANK, target=1)]}))[0] == 400
    df = read_table(tmp_path / "labels.xlsx").set_index("img_name")
    assert df.loc["005.png", "target"] == 0 and df.loc["005.png", "dark"] == 1
    assert np.isnan(df["target"].astype(float)).sum() == 6
