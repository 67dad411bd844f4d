"""Labeling studio: a local, keyboard-first web page to label eye images (``python -m eye_clf label``).

The page (studio.html) talks to this stdlib HTTP server, bound to 127.0.0.1: GET /api/items (the queue), POST
/api/changes (labels, saved to the xlsx before the answer; 409 when another tab changed the image first) and
GET /img/<name> (only the image files listed in the folder, re-encoded as PNG; the page upscales them pixelated).
"""
import io
import json
import threading
import time
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
from PIL import Image, UnidentifiedImageError

from . import data
from .labels_store import TAGS, LabelStore

PAGE = Path(__file__).with_name("studio.html")
IDLE_S = 30.0          # a pause longer than this counts as this long when measuring the pace
MAX_BODY = 1 << 20


def label_order(names, p_open=None):
    """Queue of the one-at-a-time view: most uncertain prediction first (|p - 0.5| ascending), else by name."""
    if p_open is None:
        return sorted(names)
    return sorted(names, key=lambda n: (abs(p_open[n] - 0.5), n))


def read_review(path, names):
    """A review list written by ``python -m eye_clf audit`` (img_name, target, p_open, rank, score), by rank."""
    df = pd.read_csv(path, dtype={"img_name": str})
    missing = {"img_name", "target", "p_open", "rank", "score"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not a review list, missing column(s) {sorted(missing)}")
    unknown = sorted(set(df["img_name"]) - set(names))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} image(s) not in the image folder, e.g. {unknown[:3]}")
    return df.sort_values("rank").reset_index(drop=True)


def pace(events, idle=IDLE_S):
    """Seconds per image from ``[(time, images_done)]`` save events; pauses count at most ``idle`` seconds."""
    if len(events) < 2:
        return None
    times, counts = zip(*events)
    active = sum(min(b - a, idle) for a, b in zip(times, times[1:]))
    return active / sum(counts[1:])


class Studio:
    """What the page shows: the store, the queue (label or review mode), predictions and the session's pace."""

    def __init__(self, store, p_open=None, review=None):
        self.store, self.review = store, review
        self.mode = "label" if review is None else "review"
        if review is not None:
            self.p_open = dict(zip(review["img_name"], review["p_open"]))
            self.order = list(review["img_name"])
        else:
            self.p_open = p_open
            self.order = label_order(store.files, p_open)
        self.grid = self.order[::-1] if p_open is not None and review is None else self.order
        self.events = []
        self.lock = threading.Lock()

    def done(self, state):
        return state["reviewed"] if self.mode == "review" else state["target"] is not None or state["unsure"]

    def start(self, states=None):
        """Index of the first image still to do (resume), or 0 when all are done."""
        states = states or self.store.states(self.order)
        return next((i for i, n in enumerate(self.order) if not self.done(states[n])), 0)

    def item(self, name, state):
        return dict(name=name, **state, p=None if self.p_open is None else float(self.p_open[name]))

    def items(self):
        states = self.store.states(self.order)
        rows = [self.item(n, states[n]) for n in self.order]
        if self.review is not None:
            for row, r in zip(rows, self.review.itertuples()):
                row.update(given=int(r.target), rank=int(r.rank), score=float(r.score))
        return dict(mode=self.mode, tags=list(TAGS), has_model=self.p_open is not None, items=rows,
                    grid=self.grid, start=self.start(states), progress=self.progress(states))

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
        before = self.progress()["done"]
        applied, conflicts = self.store.apply(changes)
        progress = self.progress()
        if progress["done"] > before:
            with self.lock:
                self.events.append((time.monotonic(), progress["done"] - before))
            progress = self.progress()
        current = self.store.states(conflicts)
        answer = dict(applied=applied, conflicts=[self.item(n, s) for n, s in current.items()], progress=progress)
        return (HTTPStatus.CONFLICT if conflicts else HTTPStatus.OK), answer


def png(path):
    """An image file re-encoded as PNG bytes (original size; the page upscales it without smoothing)."""
    with Image.open(path) as image:
        if image.mode.startswith(("I", "F")):  # 16/32-bit: show it as the model sees it
            image = Image.fromarray(data.to_gray24(image))
        image = image.convert("L" if image.mode in ("1", "L") else "RGB")
        buf = io.BytesIO()
        image.save(buf, "PNG")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    server_version = "eye_clf-studio"

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
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message):
        self.send(status, dict(error=message))

    def local_host(self):
        """Only answer requests addressed to this machine by name (no DNS rebinding from other sites)."""
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        return host in ("127.0.0.1", "localhost")

    def do_GET(self):
        studio = self.server.studio
        path = urlsplit(self.path).path
        if not self.local_host():
            return self.error(HTTPStatus.BAD_REQUEST, "unexpected Host header")
        if path == "/":
            return self.send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
        if path == "/api/items":
            return self.send(HTTPStatus.OK, studio.items())
        if path == "/api/progress":
            return self.send(HTTPStatus.OK, studio.progress())
        if path.startswith("/img/"):
            file = studio.store.files.get(unquote(path[len("/img/"):]))  # listed names only: no path is built
            if file is None:
                return self.error(HTTPStatus.NOT_FOUND, "no such image")
            try:
                return self.send(HTTPStatus.OK, png(file), "image/png")
            except (UnidentifiedImageError, OSError, SyntaxError):
                return self.error(HTTPStatus.BAD_REQUEST, f"{file.name} is not a readable image")
        return self.error(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self):
        if not self.local_host():
            return self.error(HTTPStatus.BAD_REQUEST, "unexpected Host header")
        if urlsplit(self.path).path != "/api/changes":
            return self.error(HTTPStatus.NOT_FOUND, "not found")
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self.error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            return self.error(HTTPStatus.BAD_REQUEST, f"body must be 1..{MAX_BODY} bytes")
        try:
            changes = json.loads(self.rfile.read(length))["changes"]
            if not isinstance(changes, list):
                raise ValueError("changes must be a list")
            status, answer = self.server.studio.change(changes)
        except (ValueError, KeyError, TypeError) as err:
            return self.error(HTTPStatus.BAD_REQUEST, f"bad change: {err}")
        except OSError as err:
            path = self.server.studio.store.path
            return self.error(HTTPStatus.INTERNAL_SERVER_ERROR, f"could not save {path}: {err}")
        self.send(status, answer)


def make_server(studio, port=0):
    """An HTTP server for ``studio`` on 127.0.0.1:``port`` (0: a free port); call ``serve_forever`` on it."""
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as err:
        raise OSError(f"cannot listen on 127.0.0.1:{port} ({err.strerror}); choose another --port, or 0") from None
    server.studio = studio
    return server


def predictions(store, checkpoint):
    """P(open) of every image of the store by the model of ``checkpoint``."""
    from .predict import predict_proba
    names = sorted(store.files)
    p = predict_proba([str(store.files[n]) for n in names], checkpoint=checkpoint)
    return dict(zip(names, p.tolist()))


def serve(images, labels, checkpoint=None, review=None, port=0, open_browser=True):
    """Run the studio until Ctrl+C."""
    store = LabelStore(labels, images)
    if store.orphans:
        print(f"note: {len(store.orphans)} row(s) of {labels} have no image in {images}; kept, not shown")
    studio = Studio(store, predictions(store, checkpoint) if checkpoint and review is None else None,
                    read_review(review, store.files) if review else None)
    server = make_server(studio, port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    progress = studio.progress()
    print(f"{studio.mode}: {progress['done']}/{progress['total']} done; labels are saved to {store.path} after "
          f"every key.\nOpen {url}  (Ctrl+C stops the server)", flush=True)
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
