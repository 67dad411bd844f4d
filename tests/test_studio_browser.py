"""The labeling studio as a user drives it: Debian's Chromium (headless) and Playwright, keyboard only.

Set EYE_CLF_SCREENSHOT=path to save a screenshot of the grid view, EYE_CLF_STUDIO_TIMING=path.json to save the
measured seconds per grid page (key presses to saved page) and per single label.
"""
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import expect, sync_playwright

from eye_clf import studio
from eye_clf.data import load_image, read_labels
from eye_clf.files import atomic_write
from eye_clf.labels_store import LabelStore
from eye_clf.train import TrainConfig, checkpoint, fit, save_checkpoint
from test_studio import eye

CHROMIUM = os.environ.get("EYE_CLF_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
N = 120  # images: two full grid pages of 48 and a partial one


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make browser` (apt-get install chromium) or set "
                    "EYE_CLF_CHROMIUM")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """N synthetic eyes and a small model trained on them (so the grid has confident pre-labels)."""
    root = tmp_path_factory.mktemp("studio")
    images = root / "images"
    images.mkdir()
    for i in range(N):
        eye(i % 3 != 0, i).save(images / f"{i:04d}.png")
    (images / "notes.txt").write_text("not an image")
    (root / "secret.txt").write_text("secret")
    x = np.stack([load_image(f) for f in sorted(images.glob("*.png"))])
    y = np.array([i % 3 != 0 for i in range(N)], dtype=np.float32)
    cfg = TrainConfig(width=4, epochs=6, batch_size=16, augment=0, lr=1e-2, device="cpu")
    model, _ = fit(x, y, np.arange(0, N, 2), np.arange(1, N, 2), cfg, progress=False)
    save_checkpoint(checkpoint(model, cfg), root / "model.pt")
    return root


def read_table(path):
    return read_labels(path, partial=True)


@contextmanager
def running(app):
    """Serve a Studio on a free port in a thread; yields its URL."""
    server = studio.make_server(app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def url(dataset, tmp_path):
    """A studio (model-assisted) over the synthetic images with a fresh labels file at tmp_path/labels.xlsx."""
    store = LabelStore(tmp_path / "labels.xlsx", dataset / "images")
    suggested = studio.predictions(store.files, dataset / "model.pt")
    with running(studio.Studio(store, suggested, source="model.pt")) as address:
        yield address


def open_page(browser, url, server=None):
    """The studio's page, its big image loaded. ``server``: a dict whose "up" says whether the page's saves reach
    the studio or fail as if it had stopped; its route is set before the page loads (one added later let a save
    through once in a full run)."""
    page = browser.new_page(viewport={"width": 1000, "height": 820})
    if server is not None:
        page.route("**/api/changes", lambda route: route.continue_() if server["up"] else route.abort())
    page.goto(url)
    # functions, not expression strings: the page's CSP forbids the eval Playwright uses for the latter
    page.wait_for_function("() => (i => i.complete && i.naturalWidth)(document.getElementById('big'))")
    return page


def saved(page):
    expect(page.locator("#save")).to_have_text("all saved")


def test_keyboard_labels_survive_a_reload(browser, url, tmp_path):
    page = open_page(browser, url)
    expect(page.locator("#mode")).to_have_text("label · suggestions: model model.pt")
    big = page.locator("#big")
    assert big.evaluate("i => [i.naturalWidth, i.clientWidth, getComputedStyle(i).imageRendering]") == \
        [24, 336, "pixelated"]
    names = []
    timings = []
    for key in ("o", "c", "s"):
        names.append(page.text_content("#name"))
        t0 = time.perf_counter()
        page.keyboard.press(key)
        saved(page)
        timings.append(time.perf_counter() - t0)
    page.keyboard.press("ArrowLeft")                      # back to the skipped image
    expect(page.locator("#name")).to_have_text(names[2])
    for key in ("d", "g", "u"):                           # tag dark, tag glasses, undo glasses
        page.keyboard.press(key)
    saved(page)
    df = read_table(tmp_path / "labels.xlsx").set_index("img_name")
    assert df.loc[names[0], "target"] == 1 and df.loc[names[1], "target"] == 0
    assert df.loc[names[2], ["unsure", "dark", "glasses"]].tolist() == [1, 1, 0]
    assert df["target"].notna().sum() == 2

    page.reload()                                          # resumes at the first image not done
    page.wait_for_function("() => document.getElementById('name').textContent")
    fourth = page.text_content("#name")
    assert fourth not in names and pd.isna(df.loc[fourth, "target"]) and df.loc[fourth, "unsure"] == 0
    expect(page.locator("#progress")).to_contain_text(f"3 / {N} done (1 unsure)")
    page.keyboard.press("o")
    page.keyboard.press("u")                               # undo goes back to the image and clears it
    saved(page)
    expect(page.locator("#name")).to_have_text(fourth)
    expect(page.locator("#label")).to_have_text("not labeled")
    assert read_table(tmp_path / "labels.xlsx").set_index("img_name")["target"].isna().sum() == N - 2
    record(single_label_seconds=timings)


def test_grid_pages_confirm_model_labels(browser, url, tmp_path):
    page = open_page(browser, url)
    page.keyboard.press("m")
    cells = page.locator("#grid .cell")
    expect(cells).to_have_count(48)
    expect(page.locator("#one")).to_be_hidden()
    seconds, confirmed = [], {}
    for n_page in range(2):
        page.wait_for_function(
            "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth)")
        shown = {c.get_attribute("data-name"): "open" in c.get_attribute("class") for c in cells.all()}
        t0 = time.perf_counter()
        page.keyboard.press("ArrowRight")                  # flip the second cell: the model was "wrong"
        page.keyboard.press("Space")
        flipped = cells.nth(1).get_attribute("data-name")
        shown[flipped] = not shown[flipped]
        expect(cells.nth(1)).to_have_class("cell " + ("open" if shown[flipped] else "closed") + " cursor")
        if n_page == 0 and os.environ.get("EYE_CLF_SCREENSHOT"):
            page.screenshot(path=os.environ["EYE_CLF_SCREENSHOT"])
        page.keyboard.press("Enter")
        saved(page)
        expect(cells.first).not_to_have_attribute("data-name", next(iter(shown)))
        seconds.append(time.perf_counter() - t0)
        confirmed.update(shown)
    expect(cells).to_have_count(N - 96)
    df = read_table(tmp_path / "labels.xlsx").set_index("img_name")
    assert df["target"].notna().sum() == 96
    assert all(df.loc[name, "target"] == int(is_open) for name, is_open in confirmed.items())
    record(grid_page_seconds=seconds, images_per_page=48)


def test_two_tabs_do_not_overwrite_each_other(browser, url, tmp_path):
    a, b = open_page(browser, url), open_page(browser, url)
    name = a.text_content("#name")
    assert b.text_content("#name") == name
    b.keyboard.press("c")
    saved(b)
    a.keyboard.press("o")                                  # tab a still shows the image unlabeled
    expect(a.locator("#banner")).to_contain_text(f"changed in another tab first: {name}")
    saved(a)
    assert read_table(tmp_path / "labels.xlsx").set_index("img_name").loc[name, "target"] == 0
    a.keyboard.press("ArrowLeft")
    expect(a.locator("#label")).to_have_text("CLOSED")     # tab a now shows what tab b saved


def test_undo_never_reverses_a_change_another_tab_saved_first(browser, url, tmp_path):
    a, b = open_page(browser, url), open_page(browser, url)
    name = a.text_content("#name")
    b.keyboard.press("c")
    saved(b)
    a.keyboard.press("c")                                  # the same decision, refused: tab b made it first
    expect(a.locator("#banner")).to_contain_text(f"changed in another tab first: {name}")
    saved(a)
    a.keyboard.press("u")                                  # tab a saved nothing, so there is nothing to undo
    expect(a.locator("#banner")).to_have_text("Nothing to undo.")
    saved(a)
    assert read_table(tmp_path / "labels.xlsx").set_index("img_name").loc[name, "target"] == 0


def test_labels_made_while_another_save_holds_the_file_are_sent_again(browser, url, tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")  # POSIX: elsewhere saves take no lock
    from eye_clf import labels_store
    monkeypatch.setattr(labels_store, "LOCK_WAIT_S", 0.3)
    page = open_page(browser, url)
    name = page.text_content("#name")
    with open(tmp_path / ".labels.xlsx.lock", "a") as held:  # another studio saving, or a stuck network disk
        fcntl.flock(held, fcntl.LOCK_EX)
        page.keyboard.press("o")
        expect(page.locator("#banner")).to_contain_text("Not saved yet: ")
        expect(page.locator("#banner")).to_contain_text("is being saved by another studio or program")
        expect(page.locator("#save")).to_have_text("1 waiting: file in use")
        page.keyboard.press("u")  # undo and relabel during the wait: sent in order, once
        page.keyboard.press("c")
        expect(page.locator("#save")).to_have_text("3 waiting: file in use")
        assert pd.isna(read_table(tmp_path / "labels.xlsx").set_index("img_name").loc[name, "target"])
    expect(page.locator("#save")).to_have_text("all saved", timeout=60_000)  # kept and sent again 5 s later
    expect(page.locator("#banner")).to_be_hidden()
    table = read_table(tmp_path / "labels.xlsx").set_index("img_name")
    assert table.loc[name, "target"] == 0 and table["target"].notna().sum() == 1


def test_review_queue(browser, dataset, tmp_path):
    labels, review = tmp_path / "labels.xlsx", tmp_path / "review.csv"
    pd.DataFrame({"img_name": ["0003.png", "0004.png", "0005.png"], "target": [1, 0, 1]}).to_excel(labels, index=False)
    pd.DataFrame({"img_name": ["0004.png", "0003.png"], "target": [0, 1], "p_open": [0.97, 0.02], "rank": [1, 2],
                  "score": [0.03, 0.02]}).to_csv(review, index=False)
    store = LabelStore(labels, dataset / "images")
    with running(studio.Studio(store, review=studio.read_review(review, store.files))) as address:
        page = open_page(browser, address)
        expect(page.locator("#mode")).to_have_text("review suspicious labels")
        expect(page.locator("#name")).to_have_text("0004.png")
        expect(page.locator("#hint")).to_contain_text("audit rank 1, label given closed")
        page.keyboard.press("o")                           # the label was wrong
        expect(page.locator("#name")).to_have_text("0003.png")
        page.keyboard.press("Enter")                       # this one was right after all
        saved(page)
        expect(page.locator("#progress")).to_contain_text("2 / 2 reviewed")
    df = read_table(labels).set_index("img_name")
    assert df.loc[["0004.png", "0003.png", "0005.png"], ["target", "reviewed"]].values.tolist() == \
        [[1, 1], [1, 1], [1, 0]]


def test_without_a_model_the_keys_that_need_one_say_why(browser, dataset, tmp_path):
    store = LabelStore(tmp_path / "labels.xlsx", dataset / "images")
    with running(studio.Studio(store)) as address:
        page = open_page(browser, address)
        expect(page.locator("#mode")).to_have_text("label · no model: no suggestions")
        name = page.text_content("#name")
        page.keyboard.press("Enter")
        expect(page.locator("#banner")).to_contain_text("there is none: the studio runs without a model")
        expect(page.locator("#name")).to_have_text(name)
        page.keyboard.press("m")
        expect(page.locator("#banner")).to_contain_text("The grid pages show the model's pre-labels")
        expect(page.locator("#gridview")).to_be_hidden()
        page.keyboard.press("c")                          # labelling by hand still works
        saved(page)
    assert read_table(tmp_path / "labels.xlsx").set_index("img_name").loc[name, "target"] == 0


def test_browser_cannot_read_files_outside_the_list(browser, url):
    page = browser.new_page()
    for path in ("img/%2e%2e/secret.txt", "img/..%2fsecret.txt", "img/../secret.txt", "img/notes.txt",
                 "img/9999.png", "secret.txt", "img/%2fetc%2fpasswd"):
        assert page.goto(url + path).status == 404, path
    assert page.goto(url + "img/0001.png").status == 200


def record(**values):
    """Add measured values to the JSON file named by $EYE_CLF_STUDIO_TIMING (if set)."""
    path = os.environ.get("EYE_CLF_STUDIO_TIMING")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps({**old, **values}, indent=1)))


def test_a_held_key_acts_once_and_caps_lock_changes_nothing(browser, url, tmp_path):
    page = open_page(browser, url)
    first = page.text_content("#name")
    page.keyboard.press("O")                               # Caps Lock (or Shift) on: still "open"
    saved(page)
    second = page.text_content("#name")
    page.keyboard.press("c")
    saved(page)
    page.keyboard.press("ArrowLeft")
    for _ in range(4):                                     # a held tag key: one toggle, not on-off-on-off
        page.keyboard.down("d")
    page.keyboard.up("d")
    saved(page)
    for _ in range(4):                                     # a held undo key: the last change only (the tag)
        page.keyboard.down("u")
    page.keyboard.up("u")
    saved(page)
    table = read_table(tmp_path / "labels.xlsx").set_index("img_name")
    assert table.loc[first, "target"] == 1 and table.loc[second, "target"] == 0 and table["dark"].sum() == 0
    page.keyboard.press("Control+Shift+Z")                 # redo elsewhere: not an undo here
    saved(page)
    assert read_table(tmp_path / "labels.xlsx").set_index("img_name").loc[second, "target"] == 0
    page.keyboard.press("u")
    saved(page)
    assert pd.isna(read_table(tmp_path / "labels.xlsx").set_index("img_name").loc[second, "target"])


def test_labels_made_while_the_studio_does_not_answer_are_sent_when_it_does(browser, url, tmp_path):
    server = {"up": True}
    page = open_page(browser, url, server)
    name = page.text_content("#name")
    server["up"] = False                                    # the server stopped (Ctrl+C) or crashed
    page.keyboard.press("o")
    expect(page.locator("#banner")).to_contain_text("the studio server does not answer")
    expect(page.locator("#save")).to_have_text("1 waiting: no answer from the studio")
    page.keyboard.press("c")                                # labelling goes on meanwhile
    expect(page.locator("#save")).to_have_text("2 waiting: no answer from the studio")
    assert pd.isna(read_table(tmp_path / "labels.xlsx").set_index("img_name").loc[name, "target"])
    server["up"] = True                                     # restarted
    expect(page.locator("#save")).to_have_text("all saved", timeout=60_000)
    table = read_table(tmp_path / "labels.xlsx").set_index("img_name")
    assert table.loc[name, "target"] == 1 and table["target"].notna().sum() == 2


def test_a_save_another_program_refused_stays_in_view(browser, url, tmp_path):
    server = {"up": True}
    page = open_page(browser, url, server)
    page.keyboard.press("o")
    saved(page)
    path = tmp_path / "labels.xlsx"
    table = read_table(path)
    table.assign(target=table["target"].where(table.index != 5, 0)).to_excel(path, index=False)  # another program
    page.keyboard.press("c")
    expect(page.locator("#save")).to_have_text("1 NOT SAVED")
    expect(page.locator("#banner")).to_contain_text("was changed by another program")
    expect(page.locator("#banner")).to_contain_text("labels.unsaved-1.xlsx")
    page.keyboard.press("ArrowRight")                       # the warning does not go away with the next key
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#save")).to_have_text("1 NOT SAVED")
    assert (tmp_path / "labels.unsaved-1.xlsx").is_file()
    server["up"] = False                                    # then the studio is stopped, as the message asks
    page.keyboard.press("o")
    expect(page.locator("#save")).to_have_text("1 NOT SAVED · 1 waiting: no answer from the studio")
    page.keyboard.press("ArrowRight")                       # the newer state is the one kept in view
    expect(page.locator("#banner")).to_contain_text("the studio server does not answer")


def test_enter_on_a_labelled_image_keeps_its_label(browser, url, tmp_path):
    """Enter accepts the model's suggestion for an image without a label; on a labelled one it keeps the label
    (pressing through a labelled file must not replace labels with the model's guesses)."""
    page = open_page(browser, url)
    name = page.text_content("#name")
    guess = "open" if "Enter = open" in page.text_content("#hint") else "closed"
    page.keyboard.press("c" if guess == "open" else "o")  # the label the model would not give
    saved(page)
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#hint")).to_contain_text("Enter = " + ("closed" if guess == "open" else "open"))
    page.keyboard.press("Enter")
    saved(page)
    assert read_table(tmp_path / "labels.xlsx").set_index("img_name").loc[name, "target"] == (guess == "closed")
