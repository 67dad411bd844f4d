"""Screenshot of the labeling studio on the real patches, for the README: for_readme/studio.png.

    python scripts/studio_screenshot.py [--data DIR] [--out for_readme/studio.png]

Serves <data>/EyesDataset with the shipped model's suggestions and a new labels file in a temporary folder (no
labels file of the project is touched), then drives Debian's Chromium with Playwright as a user would: three
images labelled one at a time, then the grid view with one pre-label flipped, and a screenshot of it.
"""
import argparse
import os
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from eye_clf import data, studio
from eye_clf.__main__ import output_file
from eye_clf.files import atomic_write
from eye_clf.labels_store import LabelStore
from eye_clf.predict import DEFAULT_CHECKPOINT

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="data folder (default: $EYE_CLF_DATA or ../shared/data)")
    parser.add_argument("--out", type=lambda text: Path(output_file(text)), default=ROOT / "for_readme" / "studio.png")
    parser.add_argument("--chromium", default=os.environ.get("EYE_CLF_CHROMIUM", "/usr/bin/chromium"),
                        help="Chromium executable (default: $EYE_CLF_CHROMIUM or /usr/bin/chromium)")
    args = parser.parse_args()
    if not (os.path.isfile(args.chromium) and os.access(args.chromium, os.X_OK)):
        parser.error(f"--chromium: {args.chromium} is not an executable; install Chromium (`make browser`) or set "
                     "$EYE_CLF_CHROMIUM")
    try:
        images = data.data_dir(args.data) / data.IMAGES_FOLDER
    except FileNotFoundError as err:
        parser.error(str(err))
    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(Path(tmp) / "labels.xlsx", images)
        app = studio.Studio(store, studio.predictions(store.files), source=f"{DEFAULT_CHECKPOINT.name} (shipped)")
        server = studio.make_server(app)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
                page = browser.new_page(viewport={"width": 1100, "height": 840})
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
                page.wait_for_function("() => (i => i.complete && i.naturalWidth)(document.getElementById('big'))")
                for key in ("o", "c", "Enter"):
                    page.keyboard.press(key)
                expect(page.locator("#progress")).to_contain_text("3 / ")
                page.keyboard.press("m")
                page.keyboard.press("ArrowRight")
                page.keyboard.press("Space")
                expect(page.locator("#save")).to_have_text("all saved")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth)")
                png = page.screenshot(type="png")
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
    atomic_write(args.out, lambda tmp: Path(tmp).write_bytes(png))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
