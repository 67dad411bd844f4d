"""Labeling studio: a local, keyboard-first web page to label eye images (``python -m eye_clf label``).

The page (studio.html) talks to this stdlib HTTP server, bound to 127.0.0.1: GET /api/items (the queue), POST
/api/changes (labels, saved to the xlsx before the answer; 409 when another tab changed the image first, with the
indices of the refused changes) and GET /img/<name> (only the image files listed in the folder, or named by the labels
file in its subfolders, whose file resolves inside it, re-encoded as PNG; the page upscales them pixelated).

Requests must name this server in their Host header (no DNS rebinding). A POST is accepted only from the studio's
own page: its Origin header must be the studio's origin (browsers send Origin with every POST); without Origin,
``Sec-Fetch-Site: same-origin`` or a Referer from the studio will do, and a request with none of them is refused.
Pages may not be framed (X-Frame-Options and CSP frame-ancestors). One POST carries at most MAX_BODY bytes and
MAX_CHANGES changes (a grid page is 48): more is answered 413. A save that waits over labels_store.LOCK_WAIT_S for
another one's lock is answered 503, and the page keeps those changes and sends them again.
"""
import glob
import io
import json
import sys
import threading
import time
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from . import data
from .data import LabelError
from .files import LockTimeout
from .labels_store import TAGS, FileChanged, LabelStore, subfolder_images
from .preprocess import upright

PAGE = Path(__file__).with_name("studio.html")
IDLE_S = 30.0          # a pause longer than this counts as this long when measuring the pace
MAX_BODY = 1 << 20
MAX_CHANGES = 1000
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "frame-ancestors 'none'")


def label_order(names, p_open=None):
    """Queue of the one-at-a-time view: most uncertain prediction first (|p - 0.5| ascending; an image without a
    prediction, one the model could not read, before all), else by name."""
    if p_open is None:
        return sorted(names)
    return sorted(names, key=lambda n: (abs(p_open[n] - 0.5) if n in p_open else -1.0, n))


def read_review(path, names):
    """A review list written by ``python -m eye_clf audit`` (img_name, target, p_open, rank, score), by rank.

    Raises LabelError naming the file and the bad rows: an image not in ``names``, a duplicate, a target not 0/1,
    p_open not a number in 0..1, rank not an integer, score not a number.
    """
    df = data.read_sheet(path, "review list")
    missing = {"img_name", "target", "p_open", "rank", "score"} - set(df.columns)
    if missing:
        raise LabelError(f"{path}: not a review list, missing column(s) {sorted(missing)}")
    num = {c: pd.to_numeric(df[c], errors="coerce") for c in ("target", "p_open", "rank", "score")}
    checks = {"target": lambda v: v in (0, 1), "p_open": lambda v: 0 <= v <= 1,
              "rank": lambda v: np.isfinite(v) and v == int(v), "score": np.isfinite}
    need = {"target": "0 or 1", "p_open": "a number in 0..1", "rank": "an integer", "score": "a number"}
    raw = {c: df[c].tolist() for c in num}  # Python values, for the messages
    named = data.name_problems(df["img_name"])
    problems = []
    for i, (row, name) in enumerate(zip(df.index, df["img_name"])):
        where = f"row {row} ({name})"
        if i in named:
            problems.append(named[i])
        if data.filled(name) and name not in names:
            problems.append(f"{where}: image not in the image folder")
        problems += [f"{where}: {c} {raw[c][i]!r} is not {need[c]}"
                     for c, ok in checks.items() if pd.isna(num[c].iloc[i]) or not ok(num[c].iloc[i])]
    if problems:
        raise LabelError.rows(path, problems)
    df = df.assign(**num).astype({"target": int, "rank": int})
    return df.sort_values("rank").reset_index(drop=True)


def pace(events, idle=IDLE_S):
    """Seconds per image from ``[(time, images_done)]`` save events; pauses count at most ``idle`` seconds."""
    if len(events) < 2:
        return None
    times, counts = zip(*events)
    active = sum(min(b - a, idle) for a, b in zip(times, times[1:]))
    return active / sum(counts[1:])


class Studio:
    """What the page shows: the store, the queue (label or review mode), predictions and the session's pace.

    ``source`` names where the suggestions come from (the model's checkpoint file, or the review list) in the page
    header.
    """

    def __init__(self, store, p_open=None, review=None, source=None):
        self.store, self.review, self.source = store, review, source
        self.mode = "label" if review is None else "review"
        if review is not None:
            self.p_open = dict(zip(review["img_name"], review["p_open"]))
            self.order = list(review["img_name"])
        else:
            self.p_open = p_open
            self.order = label_order(store.files, p_open)
        self.grid = self.order[::-1] if p_open is not None and review is None else self.order
        self.events = []
        self.lock = threading.Lock()  # the events
        self.changing = threading.Lock()  # one change at a time, so its "done" before and after are its own

    def done(self, state):
        return state["reviewed"] if self.mode == "review" else state["target"] is not None or state["unsure"]

    def start(self, states=None):
        """Index of the first image still to do (resume), or 0 when all are done."""
        states = states or self.store.states(self.order)
        return next((i for i, n in enumerate(self.order) if not self.done(states[n])), 0)

    def item(self, name, state):
        p = None if self.p_open is None else self.p_open.get(name)
        return dict(name=name, **state, p=None if p is None else float(p))

    def items(self):
        states = self.store.states(self.order)
        rows = [self.item(n, states[n]) for n in self.order]
        if self.review is not None:
            for row, r in zip(rows, self.review.itertuples()):
                row.update(given=int(r.target), rank=int(r.rank), score=float(r.score))
        return dict(mode=self.mode, tags=list(TAGS), has_model=self.p_open is not None, source=self.source,
                    items=rows, grid=self.grid, start=self.start(states), progress=self.progress(states),
                    max_changes=MAX_CHANGES)

    def progress(self, states=None):
        states = list((states or self.store.states(self.order)).values())
        done = sum(map(self.done, states))
        with self.lock:
            sec = pace(self.events)
        return dict(total=len(states), done=done, labeled=sum(s["target"] is not None for s in states),
                    unsure=sum(s["unsure"] for s in states), reviewed=sum(s["reviewed"] for s in states),
                    seconds_per_image=sec, eta_s=None if sec is None else sec * (len(states) - done))

    def change(self, changes):
        """Apply and save changes; returns (http status, answer)."""
        with self.changing:
            before = self.progress()["done"]
            applied, refused = self.store.apply(changes)
            progress = self.progress()
            if progress["done"] > before:
                with self.lock:
                    self.events.append((time.monotonic(), progress["done"] - before))
                progress = self.progress()
        current = self.store.states(dict.fromkeys(changes[i]["name"] for i in refused))
        answer = dict(applied=applied, refused=refused, conflicts=[self.item(n, s) for n, s in current.items()],
                      progress=progress)
        return (HTTPStatus.CONFLICT if refused else HTTPStatus.OK), answer


def png(path):
    """An image file re-encoded as PNG bytes, upright as its EXIF orientation says (as the model reads it; original
    size, except 16/32-bit images: 24x24); the page upscales it without smoothing."""
    with Image.open(path) as image:
        image = upright(image)
        if image.mode.startswith(("I", "F")):  # 16/32-bit: show it as the model sees it
            image = Image.fromarray(data.to_gray24(image))
        image = image.convert("L" if image.mode in ("1", "L") else "RGB")
        buf = io.BytesIO()
        image.save(buf, "PNG")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    server_version = "eye_clf-studio"
    timeout = 60  # seconds: a client that stops sending in the middle of a request is dropped

    def log_request(self, code="-", size="-"):  # quiet on success; errors are still logged
        pass

    def send(self, status, body, ctype="application/json"):
        if ctype == "application/json":
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the page moved on (an image it no longer shows)
            pass

    def error(self, status, message):
        self.send(status, dict(error=message))

    def own_host(self):
        """The Host header when it names this server (127.0.0.1 or localhost, this port), else None."""
        port = self.server.server_address[1]
        names = ("127.0.0.1", "localhost")
        hosts = {f"{name}:{port}" for name in names} | (set(names) if port == 80 else set())
        host = self.headers.get("Host")
        return host if host in hosts else None

    def same_origin(self, host):
        """Whether a request comes from the studio's own page (see the module docstring)."""
        own = f"http://{host}"
        if (origin := self.headers.get("Origin")) is not None:
            return origin == own
        if (site := self.headers.get("Sec-Fetch-Site")) is not None:
            return site == "same-origin"
        referer = self.headers.get("Referer") or ""
        return referer == own or referer.startswith(own + "/")

    def do_GET(self):
        studio = self.server.studio
        path = urlsplit(self.path).path
        if self.own_host() is None:
            return self.error(HTTPStatus.BAD_REQUEST, "unexpected Host header")
        if path == "/":
            return self.send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
        if path == "/api/items":
            return self.send(HTTPStatus.OK, studio.items())
        if path.startswith("/img/"):
            file = studio.store.image(unquote(path[len("/img/"):]))  # listed names only: no path is built
            if file is None:
                return self.error(HTTPStatus.NOT_FOUND, "no such image")
            try:
                body = png(file)
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
                return self.error(HTTPStatus.BAD_REQUEST, f"{file.name} is not a readable image")
            return self.send(HTTPStatus.OK, body, "image/png")
        return self.error(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self):
        host = self.own_host()
        if host is None:
            return self.error(HTTPStatus.BAD_REQUEST, "unexpected Host header")
        if not self.same_origin(host):
            return self.error(HTTPStatus.FORBIDDEN, "changes are accepted only from the studio's own page")
        if urlsplit(self.path).path != "/api/changes":
            return self.error(HTTPStatus.NOT_FOUND, "not found")
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self.error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        length = self.headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()):
            return self.error(HTTPStatus.BAD_REQUEST, f"Content-Length {length!r} is not a number of bytes")
        if int(length) > MAX_BODY:
            return self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes; at most {MAX_BODY}")
        try:
            body = json.loads(self.rfile.read(int(length)))
        except (ValueError, RecursionError) as err:
            return self.error(HTTPStatus.BAD_REQUEST, f"body is not JSON of a sane depth ({type(err).__name__})")
        changes = body.get("changes") if isinstance(body, dict) else None
        if not isinstance(changes, list):
            return self.error(HTTPStatus.BAD_REQUEST, 'body must be {"changes": [...]}')
        if len(changes) > MAX_CHANGES:
            return self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"{len(changes)} changes in one request; send at most {MAX_CHANGES} at a time")
        try:
            status, answer = self.server.studio.change(changes)
        except ValueError as err:
            return self.error(HTTPStatus.BAD_REQUEST, f"bad change: {err}")
        except LockTimeout as err:  # another save holds the file: nothing changed, the page sends them again
            return self.error(HTTPStatus.SERVICE_UNAVAILABLE, str(err))
        except OSError as err:  # another program changed or moved the file (kept beside it: the message), ...
            path = self.server.studio.store.path
            message = str(err) if isinstance(err, FileChanged) else f"could not save {path}: {err}"
            print(f"not saved: {message}", file=sys.stderr, flush=True)
            return self.error(HTTPStatus.INTERNAL_SERVER_ERROR, message)
        self.send(status, answer)


def make_server(studio, port=0):
    """An HTTP server for ``studio`` on 127.0.0.1:``port`` (0: a free port); call ``serve_forever`` on it."""
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as err:
        raise OSError(f"cannot listen on 127.0.0.1:{port} ({err.strerror}); choose another --port, or 0") from None
    server.studio = studio
    return server


def predictions(files, checkpoint=None):
    """P(open) of every readable image of ``files`` ({name: path}, as a store's ``files``) by the model of
    ``checkpoint`` (None: the shipped model). An image the model cannot read (corrupt, too large) gets no
    prediction; the page still shows it."""
    from .predict import predict_proba
    images, names = [], []
    for name, file in sorted(files.items()):
        try:
            images.append(data.load_image(file))
        except (OSError, ValueError):
            continue
        names.append(name)
    if not names:
        return {}
    return dict(zip(names, np.atleast_1d(predict_proba(images, checkpoint=checkpoint)).tolist()))


def relabelled_since(review, store):
    """Names of the review list whose audited label (``target``) is neither the file's label nor the one a studio
    replaced (its ``original`` column): a list made from another version of the file."""
    df = store.df.loc[review["img_name"]]
    now = pd.to_numeric(df["target"], errors="coerce").astype(float)  # a blank (unsure) target: NaN, not pd.NA
    first = pd.to_numeric(df["original"], errors="coerce").astype(float) if "original" in df else now
    return [n for n, t, a, b in zip(review["img_name"], review["target"], now, first) if t not in (a, b)]


def office_lock(path):
    """The lock file that Excel (``~$name``, or ``~$`` over a long name's first two characters) or LibreOffice
    (``.~lock.name#``) keeps beside a file it has open, or None."""
    path = Path(path)
    names = (f"~${path.name}", f"~${path.name[2:]}", f".~lock.{path.name}#")
    return next((path.with_name(n) for n in names if path.with_name(n).exists()), None)


def serve(images, labels, checkpoint=None, review=None, port=0, open_browser=True, model=True):
    """Run the studio until Ctrl+C. In label mode the model of ``checkpoint`` (None: the shipped one) suggests
    labels unless ``model`` is False; ``review`` (a list from ``audit``) opens a review queue instead. The review
    list, the model and the port are checked before the labels file is created or written (an existing one is read
    first, for the images it names in subfolders)."""
    xlsx = Path(labels).suffix.lower() == ".xlsx" and Path(labels).is_file()  # the store refuses other files
    names = data.read_labels(labels, partial=True)["img_name"] if xlsx else ()
    files = {p.name: p for p in data.list_images(images)} | subfolder_images(images, names)
    queue, suggested, source = None, None, None
    if review:
        queue, source = read_review(review, files), str(review)
    elif model:
        from .predict import DEFAULT_CHECKPOINT
        suggested = predictions(files, Path(checkpoint or DEFAULT_CHECKPOINT))
        source = str(checkpoint) if checkpoint else f"{DEFAULT_CHECKPOINT.name} (shipped)"
    server = make_server(None, port)
    created = not Path(labels).exists()
    try:
        store = LabelStore(labels, images)
    except BaseException:
        server.server_close()
        raise
    if created:
        print(f"note: {labels} did not exist: created, listing the {len(store.files)} images, none labelled")
    if queue is not None and (stale := relabelled_since(queue, store)):
        print(f"note: {len(stale)} image(s) of {review} ({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}) "
              f"have a label in it that is neither the one {labels} holds nor one a studio replaced there (a list "
              "made from another version of the file?): audit it again to review the labels as they are")
    if store.orphans:
        print(f"note: {len(store.orphans)} row(s) of {labels} have no image in {images}; kept, not shown")
    if kept := sorted(store.path.parent.glob(f"{glob.escape(store.path.stem)}.unsaved-*.xlsx")):
        print(f"note: {', '.join(k.name for k in kept)} beside {labels} hold(s) labels that an earlier studio could "
              "not save into it (another program had changed it); the studio does not read them: copy the rows you "
              "need into it, then delete them")
    if lock := office_lock(store.path):
        print(f"note: {labels} looks open in a spreadsheet program ({lock.name} beside it): close it there; a save "
              "from it would overwrite the studio's labels, and the studio refuses to save over its changes")
    studio = server.studio = Studio(store, suggested, review=queue, source=source)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    progress = studio.progress()
    print(f"{studio.mode}: {progress['done']}/{progress['total']} done; labels are saved to {store.path} after "
          f"every key; suggestions: {studio.source or 'none (--no-model)'}.\nOpen {url}  (Ctrl+C stops the server)",
          flush=True)
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
