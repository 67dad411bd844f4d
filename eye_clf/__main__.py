"""Command line: ``python -m eye_clf COMMAND --help`` (or ``eye-clf COMMAND --help``).

Bad input exits with one ``error: ...`` line naming the flag or file, checked before any long work. Without the
training libraries (``pip install 'eye-clf[onnx]'`` or ``[torch]``) only ``predict`` runs.
"""
import argparse
import csv
import filecmp
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from . import __version__
from .files import ANNOTATIONS_NAME, IMAGES_FOLDER, LABELS_NAME, atomic_write, checkout, write_json
from .predict import SHIPPED
from .preprocess import list_images, load_image, subfolder_hint

DESCRIPTION = ("Is the eye in a 24x24 grayscale patch open? Train a model, predict P(open), evaluate, "
               "cross-validate, label images in a local web page, audit labels.")
DECIMALS = 6  # of P(open) and the threshold in predict's output
MIN_LIMIT = 20  # the smallest --limit whose stratified training/validation split holds both classes in each part
CV_MIN_LIMIT = 30  # the same for cv, whose folds split their training part (half the images or more) likewise
COMMANDS = ("train", "ship", "export", "predict", "evaluate", "cv", "label", "audit")
FOLDS = 5  # the default k of cv and audit

try:
    import pandas as pd

    from . import data, metrics
    from .models import ARCHS, METHODS
    from .train import ConfigError, TrainConfig, device_of
    TRAINING_MISSING = None
except ImportError as err:  # pip install ".[onnx]" or ".[torch]": the predict command (and predict_proba) only
    TRAINING_MISSING = err


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too: "error: --flag: what is wrong (see ... --help)"."""

    def error(self, message):
        self.exit(2, f"error: {message.removeprefix('argument ')} (see {self.prog} --help)\n")


def _optional(kind):
    return lambda v: None if v.lower() == "none" else kind(v)


OPTIONAL = {"weights": _optional(str), "input_size": _optional(int)}


def add_config_args(p):
    """One --flag per TrainConfig field; its help (the field's metadata), default and choices come from the
    config, so they cannot drift. Values the config refuses are checked before any work (see main)."""
    choices = {"arch": ARCHS, "method": METHODS}
    for f in fields(TrainConfig):
        flag, help = f"--{f.name.replace('_', '-')}", f.metadata["help"].replace("%", "%%")
        help += " (default: %(default)s)"
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help)
        else:
            p.add_argument(flag, type=OPTIONAL.get(f.name, type(f.default)), default=f.default,
                           choices=choices.get(f.name), metavar=None if f.name in choices else f.name.upper(),
                           help=help)
    p.add_argument("--threads", type=int_at_least(1),
                   help="torch CPU threads (default: the cores other processes leave idle)")
    p.set_defaults(config_flags=True)


def use_threads(args):
    """Set torch's CPU threads for training (--threads, else the idle cores); returns the count."""
    import torch

    from .experiment import auto_threads
    threads = args.threads or auto_threads()
    torch.set_num_threads(threads)
    return threads


def flag_error(err):
    """Exit with a ConfigError's message, naming its command-line flag."""
    sys.exit(f"error: --{err.field.replace('_', '-')}: {str(err).removeprefix(f'{err.field}: ')}")


def config_from(args):
    """The TrainConfig of the flags; a value it refuses exits with one line naming the flag."""
    try:
        cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
        device_of(cfg.device)  # a CUDA device this machine lacks: refused before the data loads
    except ConfigError as err:
        flag_error(err)
    if cfg.weights is not None:  # weights that do not fit, or ImageNet weights neither cached nor downloadable, too
        from .models import build_model
        try:
            build_model(cfg.arch, cfg.method, cfg.weights, cfg.width, cfg.dropout, cfg.input_size)
        except (ValueError, FileNotFoundError) as err:  # models.load_weights / resnet: "weights: <file> ..."
            sys.exit(f"error: --{err}")
    return cfg


def int_at_least(low, high=None):
    """argparse type: an integer in low..high (no upper bound when high is None)."""
    def parse(text):
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {f'in {low}..{high}' if high else f'>= {low}'}, got {value}")
        return value
    parse.__name__ = "int"  # argparse names the type in "invalid int value"
    return parse


def _writable(path, text):
    folder = next(a for a in (path, *path.parents) if a.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {folder} is not a writable folder")


def _outside_shipped(path, text):
    """Refuse a path in the folders of the shipped model and its curves, which only `ship` changes."""
    root = checkout()
    for folder in (SHIPPED, *([root / "plots_checkpoints"] if root else [])):
        if path.resolve().is_relative_to(folder.resolve()):
            raise argparse.ArgumentTypeError(f"{text} is in {folder}, a folder of the shipped model and its curves, "
                                             "which change only through `eye-clf ship RUN_FOLDER`; write it elsewhere")


def _outside_data(path, text):
    """Refuse a dataset's own files: anything in an EyesDataset/ folder (the images), and the labels and extra
    annotations beside one, which eye_clf reads and never writes (a symlink is judged by what it points to)."""
    path = path.resolve()
    images = next((a for a in (path, *path.parents) if a.name == IMAGES_FOLDER), None)
    if images:
        raise argparse.ArgumentTypeError(f"{text} is in {images}, a dataset's images folder, which eye_clf reads and "
                                         "never writes; write it elsewhere")
    if (path.parent / IMAGES_FOLDER).is_dir() and path.name.lower() in (LABELS_NAME, ANNOTATIONS_NAME):
        raise argparse.ArgumentTypeError(f"{text} is a dataset's own file (beside {path.parent / IMAGES_FOLDER}), "
                                         "which eye_clf reads and never writes; write it elsewhere")


def output_file(text):
    """argparse type: a file to write (not an existing folder, nor a write-protected file, nor in the shipped model's
    folders; its folder exists or can be created)."""
    path = Path(text).absolute()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing folder; give a file name")
    if path.is_file() and not (os.access(path, os.W_OK) and path.stat().st_mode & 0o222):  # root could: refused too
        raise argparse.ArgumentTypeError(f"{text} is a read-only file, which eye_clf does not replace; give another "
                                         "name, or make it writable")
    _outside_shipped(path, text)
    _outside_data(path, text)
    _writable(path.parent, text)
    return text


def json_file(text):
    """argparse type: a JSON file to write (an output_file named .json, so that no image or checkpoint is replaced)."""
    output_file(text)
    if Path(text).suffix.lower() != ".json":
        raise argparse.ArgumentTypeError(f"{text}: the file is JSON; give it a .json name")
    return text


def csv_file(text):
    """argparse type: a CSV file to write (an output_file whose name ends in .csv: it is CSV text, whatever its
    name, and a name like review.xlsx would not open where an xlsx is expected)."""
    output_file(text)
    if Path(text).suffix.lower() != ".csv":
        raise argparse.ArgumentTypeError(f"{text}: the file is CSV text; give it a .csv name")
    return text


def onnx_file(text):
    """argparse type: an ONNX file to write (an output_file named .onnx, so that nothing takes it for a .pt)."""
    output_file(text)
    if Path(text).suffix.lower() != ".onnx":
        raise argparse.ArgumentTypeError(f"{text}: the file is an ONNX model; give it a .onnx name")
    return text


def csv_or_stdout(text):
    return text if text == "-" else csv_file(text)


def output_folder(text):
    """argparse type: a folder to write into (not an existing file, nor one that holds a train run already, nor in the
    shipped model's folders)."""
    path = Path(text).absolute()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file, not a folder")
    _outside_shipped(path, text)
    _outside_data(path, text)
    held = [name for name in ("eye_clf.pt", "run.json") if (path / name).exists()]
    if held:  # a second run would replace the first one's weights and figures
        raise argparse.ArgumentTypeError(f"{text} holds a run already ({held[0]}); choose a new folder, or remove "
                                         "that one first")
    _writable(path, text)
    return text


def check_limit(args):
    """--limit may not exceed the number of labelled images (the lower bound is argparse's)."""
    labels = data.labels_file(getattr(args, "labels", None), args.data, getattr(args, "images", None))
    n = len(data.read_labels(labels))
    if args.limit > n:
        sys.exit(f"error: --limit: {args.limit} is more than the {n} labelled images of {labels}")


def cv_line(cfg, res):
    """The closing line of ``train``: the committed CV of this recipe on this data, if there is one. A damaged file in
    results/cv/ is named here, not fatal: the run is written by then."""
    from .cv import interval
    from .experiment import cv_of
    try:
        found = cv_of(cfg, images=res["images"], targets=res["targets"])
    except ValueError as err:
        return f"this recipe's CV could not be looked up in results/cv/: {err}"
    if not found:
        return "this recipe has no CV of this data in results/cv/ (see scripts/cv_ablations.py): no unbiased figure"
    name, rows = found
    eer, acc = interval([r["eer"] for r in rows]), interval([r["accuracy_at_val_threshold"] for r in rows])
    return (f"this recipe's {len(rows)}-fold CV on this data (results/cv/{name}/): EER {100 * eer[0]:.2f} ± "
            f"{100 * eer[1]:.2f}%, accuracy {100 * acc[0]:.2f} ± {100 * acc[1]:.2f}% at each fold's validation "
            "threshold")


def cmd_train(args):
    from .experiment import new_run_folder, train_run
    from .predict import model_file
    cfg = args.config
    if args.out is None:  # the default run folder is checked before any work, as --out is
        try:
            args.out = output_folder(str(new_run_folder()))
        except argparse.ArgumentTypeError as err:
            sys.exit(f"error: {err}; choose a run folder with --out")
    threads = use_threads(args)
    if args.teacher and not cfg.distill:
        sys.exit("error: --teacher needs --distill > 0 (the weight of the teachers' P(open) in the target)")
    for teacher in args.teacher or ():
        model_file(teacher, name="--teacher")  # a missing one is named before the data is read
    res = train_run(cfg, args.data, args.labels, args.out, args.limit, teachers=args.teacher or (),
                    images_dir=args.images)
    best = min(res["history"], key=lambda r: r["val_loss"])["epoch"]
    print(f"trained {cfg.arch}/{cfg.method} (weights: {cfg.weights or 'random init'}) in {res['seconds']:.0f} s"
          f"{' for both fits' if cfg.refit else ''} (torch threads: {threads}): {len(res['history'])} epoch(s) on "
          f"{len(res['split'][0])} images, best validation loss at epoch {best}"
          + (" (the last epoch kept)" if cfg.keep_last else "")
          + (f"; then a refit on all {sum(map(len, res['split']))} images for {cfg.epochs} epoch(s) (the last one "
             "kept)" if cfg.refit else ""))
    v = res["val"]
    picked = "temperature and threshold" if cfg.keep_last else "epoch, temperature and threshold"
    print(f"validation{' of the validated fit' if cfg.refit else ''} ({len(res['split'][1])} images; they picked "
          f"the {picked}, so these are optimistic): EER {100 * v['eer']:.2f}%, accuracy "
          f"{100 * v['accuracy_at_eer']:.2f}% at the validation EER threshold {v['eer_threshold']:.3f} (stored as "
          f"the checkpoint's threshold), ECE {100 * v['ece']:.2f}%")
    if res["shipped"]:
        s = res["shipped"]
        print(f"shipped model on the {s['images']} of these validation images it never trained on: "
              f"EER {100 * s['eer']:.2f}%, ECE {100 * s['ece']:.2f}%")
    print(cv_line(cfg, res))
    ship = f"; to make it the shipped model: eye-clf ship {res['out']}" if checkout() else ""
    print(f"wrote {res['out']}/ (eye_clf.pt, history.csv/json, curves, run.json){ship}")


def cmd_ship(args):
    from .experiment import ship
    ship(args.run_dir)
    print(f"shipped {args.run_dir}/eye_clf.pt: eye_clf/shipped/eye_clf.pt (+ .onnx), curves in plots_checkpoints/")


def cmd_export(args):
    from .export import OPSET, export_onnx
    from .predict import DEFAULT_CHECKPOINT
    out = export_onnx(args.checkpoint or DEFAULT_CHECKPOINT, args.out)
    print(f"wrote {out} (ONNX opset {OPSET}): input images uint8 N x 24 x 24, output p_open float32 N")


def expand(paths):
    """Image files of the arguments: files as given, folders' image files sorted by name; an argument that does
    not exist is an error (--skip-bad leaves out unreadable files, not mistyped arguments)."""
    files = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"no such file or folder: {p}")
        files.extend(list_images(p, links_out=True) if p.is_dir() else [p])
    return files


def checkpoint_info(checkpoint):
    """What a checkpoint records (the dict of a .pt file, the eye_clf metadata of an .onnx one; default: the
    shipped checkpoint), loading it first so that an unusable file is refused, by name, before any other work."""
    from . import predict
    path = Path(checkpoint or predict.DEFAULT_CHECKPOINT)
    if path.suffix.lower() == ".onnx":
        return predict.onnx_metadata(path)
    from .models import load_checkpoint
    return load_checkpoint(path)[1]


def decision_threshold(recommended):
    """The threshold on P(open) above which an eye is called open (a model's recommended one, else 0.5), and where
    it comes from."""
    if recommended is not None:
        return float(recommended), "the checkpoint's recommended threshold"
    return 0.5, "0.5: the checkpoint records no threshold"


def read_images(files, skip_bad=False):
    """The 24x24 images of ``files`` and the files read; with skip_bad an unreadable file is left out and
    listed on stderr, else the first one raises an error naming it."""
    images, read, skipped = [], [], []
    for f in files:
        try:
            images.append(load_image(f))
            read.append(f)
        except (ValueError, OSError) as err:
            if not skip_bad:
                raise
            skipped.append(str(err))
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):\n  " + "\n  ".join(skipped), file=sys.stderr)
    return images, read


def cmd_predict(args):
    from .predict import DEFAULT_CHECKPOINT, DEFAULT_ONNX, predict_proba, recommended_threshold
    files = expand(args.paths)
    if not files:
        raise ValueError(f"no image files found in {', '.join(args.paths)}"
                         + "".join(subfolder_hint(p) for p in args.paths if Path(p).is_dir()))
    models = [args.checkpoint] if args.checkpoint else [DEFAULT_CHECKPOINT, DEFAULT_ONNX]
    refuse_overwrite({"--out": None if args.out == "-" else args.out},
                     [("one of the input images", f) for f in files] + [("the model", m) for m in models])
    threshold, origin = decision_threshold(recommended_threshold(args.checkpoint))  # the model loads, or is refused
    images, files = read_images(files, args.skip_bad)
    if not images:
        raise ValueError(f"no readable image in {', '.join(args.paths)}")
    # decided on the values as written, so that every row agrees with the threshold printed beside it
    p = np.round(predict_proba(np.stack(images), checkpoint=args.checkpoint).astype(np.float64), DECIMALS)
    threshold = round(threshold, DECIMALS)
    table = [("file", "p_open", "decision")] + [(str(f), f"{v:.{DECIMALS}f}", "open" if v >= threshold else "closed")
                                                for f, v in zip(files, p)]
    print(f"decision: open when P(open) >= {threshold:.{DECIMALS}f} ({origin})", file=sys.stderr)
    if args.out == "-":
        csv.writer(sys.stdout, lineterminator="\n").writerows(table)
        sys.stdout.flush()  # a closed pipe fails here, inside main's handling, not at exit
    else:
        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                csv.writer(f, lineterminator="\n").writerows(table)
        atomic_write(args.out, write)
        print(f"wrote {len(table) - 1} predictions to {args.out}", file=sys.stderr)


def scores_line(targets, p, threshold):
    """EER (with its threshold), accuracy at ``threshold``, AUC and ECE; the accuracy alone for one class."""
    acc = f"accuracy {100 * metrics.accuracy(targets, p, threshold):.2f}%"
    if len(np.unique(targets)) < 2:
        return f"{acc} (one class only: no EER, AUC or ECE)"
    m = metrics.summary(targets, p)
    return (f"EER {100 * m['eer']:.2f}% (threshold {m['eer_threshold']:.3f})  {acc}  AUC {m['auc']:.4f}  "
            f"ECE {100 * m['ece']:.2f}%")


def cmd_evaluate(args):
    from .predict import predict_proba
    images_dir = data.images_folder(args.data, args.images)
    labels = data.read_labels(data.labels_file(args.labels, args.data, args.images), images_dir=images_dir)
    info = checkpoint_info(args.checkpoint)
    threshold, origin = decision_threshold(info.get("threshold"))
    images, _ = read_images([images_dir / n for n in labels["img_name"]])
    images, targets = np.stack(images), labels["target"].to_numpy()
    p = predict_proba(images, checkpoint=args.checkpoint)
    config = info.get("config") or {}
    print(f"model: {(info.get('model') or {}).get('arch', config.get('arch', 'unknown'))}, weights: "
          f"{info.get('weights') or config.get('weights') or 'random init'} ({args.checkpoint or 'the shipped model'})")
    print(f"{len(p)} images: {scores_line(targets, p, threshold)}\n"
          f"accuracy at threshold {threshold:.3f} ({origin})")
    if "training_images" not in info:
        onnx = " (an ONNX file never does: evaluate its .pt checkpoint to tell)" if "checkpoint_sha256" in info else ""
        print(f"seen in training: cannot tell, the checkpoint does not list its training images{onnx}; if it was "
              "trained on some of these images, the figures above are flattering")
        return
    seen = np.isin([data.image_hash(im) for im in images], list(info["training_images"]))
    print(f"the model was trained on {seen.sum()} of these {len(p)} images (same 24x24 pixels): figures on them "
          "are flattering")
    for name, mask in (("seen in training", seen), ("never seen", ~seen)):
        if mask.any():
            print(f"{name}: {mask.sum()} images: {scores_line(targets[mask], p[mask], threshold)}")


def cmd_cv(args):
    from .cv import cross_val_predict, read_fold, report
    cfg = args.config
    if cfg.distill:
        sys.exit("error: --distill: cv trains no teachers; distil in CV with scripts/cv_ablations.py (teachers: "
                 "finished CV runs on the same folds) or train one student with `eye-clf train --distill`")
    refuse_overwrite({"--out": args.out}, [("the labels file", data.labels_file(args.labels, args.data, args.images))])
    if args.out and args.fold_dir:
        out, fold_dir = Path(args.out).resolve(), Path(args.fold_dir).resolve()
        if out == fold_dir or fold_dir in out.parents:
            raise ValueError(f"--out: {args.out} is in --fold-dir {args.fold_dir}, whose files are the folds'; write "
                             "it elsewhere")
    if cfg.soft_labels:
        data.check_annotated(args.data, args.images)
    images, targets, names = data.load_dataset(args.data, args.labels, limit=args.limit, images_dir=args.images)
    soft = data.soft_targets(targets, names, args.data) if cfg.soft_labels else None
    use_threads(args)
    done = [k for k in range(args.folds) if args.fold_dir and (Path(args.fold_dir) / f"fold{k}.json").exists()]
    if done:
        print(f"resuming: fold(s) {', '.join(map(str, done))} found in {args.fold_dir}; each is used, not trained "
              "again, once checked to be of this recipe and data")
    oof, per_fold = cross_val_predict(images, targets, cfg, args.folds, seed=0, soft=soft,  # --seed: not the folds
                                      fold_dir=args.fold_dir)
    print(per_fold.round(4).to_string(index=False))
    print(f"{args.folds}-fold CV ({cfg.arch}, weights: {cfg.weights or 'random init'}): {report(per_fold)}")
    if args.out:
        from .files import provenance
        resumed = {} if not args.fold_dir else dict(fold_provenance=[  # folds read back were made by their own code
            read_fold(Path(args.fold_dir) / f"fold{k}.json").get("provenance") for k in range(args.folds)])
        result = dict(config=vars(cfg), folds=per_fold.to_dict("records"), pooled=metrics.summary(targets, oof),
                      data=dict(n=len(targets), n_open=int(targets.sum())),
                      provenance=provenance(device_of(cfg.device)), **resumed)
        write_json(args.out, result, indent=1)


def cmd_label(args):
    from .studio import serve
    labels = Path(args.labels)
    # the reference, by any path or symlink (not a hard link: the studio's first save replaces the file); the data
    # folder's copy is one unless it differs from the checkout's (then it is someone's own dataset's labels)
    ours, theirs = data.REPO_ROOT / data.LABELS_NAME, data.chosen_data_dir(args.data) / data.LABELS_NAME
    own = ours.is_file() and theirs.is_file() and not filecmp.cmp(ours, theirs, shallow=False)
    for reference in (ours, *([] if own else [theirs])):
        if reference.exists() and os.path.realpath(labels) == os.path.realpath(reference):
            sys.exit(f"error: --labels: {args.labels} is the reference labels file ({reference}), which the studio "
                     f"would rewrite: label a copy (mkdir -p runs && cp {args.labels} runs/labels.xlsx, then "
                     "--labels runs/labels.xlsx)")
    if args.review and Path(args.review).exists() and not labels.exists():  # (a missing review list: named later)
        sys.exit(f"error: --labels: {args.labels} does not exist; a review corrects the labels file that the audit "
                 "read (or a copy of it), so a new, blank one would hold nothing to review")
    try:
        images = data.images_folder(args.data, args.images)
        serve(images, args.labels, args.checkpoint, args.review, args.port, not args.no_browser,
              model=not args.no_model)
    except OSError as err:
        sys.exit(f"error: {err}")


def refuse_overwrite(outputs, inputs):
    """Refuse (ValueError) an output file (``{flag: path}``) that is an input (``(what, path)`` pairs) or another
    output, before anything is written."""
    taken = {Path(path).resolve(): what for what, path in inputs if path}
    for flag, path in outputs.items():
        if path:
            where = Path(path).resolve()
            if where in taken:
                raise ValueError(f"{flag}: {path} is {taken[where]}; write it elsewhere")
            taken[where] = flag


def cmd_audit(args):
    from .audit import audit, check_config
    cfg = args.config
    try:
        check_config(cfg)
    except ConfigError as err:
        flag_error(err)
    images_dir = data.images_folder(args.data, args.images)
    labels = data.labels_file(args.labels, args.data, args.images)
    refuse_overwrite({"--out": args.out, "--save-oof": args.save_oof},
                     [("the labels file", labels), ("--oof", args.oof),
                      ("the extra annotators' labels", data.chosen_data_dir(args.data) / data.ANNOTATIONS_NAME)])
    if args.oof:  # nothing is trained: a training flag would do nothing without a word
        unused = [flag for flag, given in (("recipe flags", cfg != TrainConfig()), ("--folds", args.folds != FOLDS),
                                           ("--threads", args.threads), ("--fold-dir", args.fold_dir)) if given]
        if unused:
            sys.exit(f"error: --oof: the audit trains nothing with --oof, so its {', '.join(unused)} would do "
                     "nothing; drop them")
    else:
        use_threads(args)
    review, names, targets, p_open = audit(images_dir, labels, args.oof, cfg, args.folds, fold_dir=args.fold_dir)
    if args.save_oof:  # first: the costly part, kept should the review list fail to write
        oof = pd.DataFrame({"img_name": names, "target": targets, "p_open": p_open})
        atomic_write(args.save_oof, lambda tmp: oof.to_csv(tmp, index=False))
    atomic_write(args.out, lambda tmp: review.to_csv(tmp, index=False))
    rows = data.read_labels(labels, partial=True)
    reviewed = rows["img_name"][rows["reviewed"] == 1].isin(review["img_name"]).sum() if "reviewed" in rows else 0
    unused = (~data.read_sheet(args.oof, "out-of-fold predictions")["img_name"].isin(names)).sum() if args.oof else 0
    print(f"{len(review)} of {len(names)} labels look wrong (cleanlab, out-of-fold P(open)); wrote {args.out}"
          + (f"\n({len(rows) - len(names)} row(s) of {labels} without a label, blank or marked unsure, were left out)"
             if len(rows) > len(names) else "")
          + (f"\n({reviewed} of them were reviewed already: marked reviewed in {labels})" if reviewed else "")
          + (f"\n({unused} row(s) of {args.oof} name no labelled image of {labels}; not used)" if unused else ""))
    if len(review):
        as_xlsx = "" if Path(labels).suffix.lower() == ".xlsx" else " saved as .xlsx"
        print(f"review them: python -m eye_clf label --images {shlex.quote(str(images_dir))} --labels COPY.xlsx "
              f"--review {shlex.quote(args.out)}\n"
              f"(COPY.xlsx: a copy of {labels}{as_xlsx}; the studio saves every change into it)")


def add_predict(sub):
    p = sub.add_parser("predict", help="write a CSV (file, p_open, decision) for image files and folders",
                       description="CSV columns: file, p_open (6 decimals), decision (open when p_open >= the "
                                   "checkpoint's recommended threshold, 0.5 when it records none; named on stderr; "
                                   "both compared as written)")
    p.add_argument("paths", nargs="+", help="image files or folders (their image files, sorted by name)")
    p.add_argument("--checkpoint", help="checkpoint, .pt or .onnx (default: the shipped model)")
    p.add_argument("--out", default="-", type=csv_or_stdout, help="CSV file (default: -, standard output)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable files and list them on stderr (default: the first one is an error)")
    p.set_defaults(run=cmd_predict)


def add_data_args(p, labels_note=""):
    """--images, --data and --labels: the labelled images a command reads (see check_data_flag)."""
    p.set_defaults(data_flags=True)
    p.add_argument("--images", help="image folder (default: <data>/EyesDataset)")
    p.add_argument("--data", help=f"data folder (default: ${data.DATA_ENV} or ../shared/data); refused beside "
                                  "--labels and an --images folder other than its EyesDataset/, which leave it unused")
    p.add_argument("--labels", help=f"labels xlsx/csv (default: the reference {data.LABELS_NAME} at the top of the "
                                    "checkout, for the default data folder's images; a --data folder without an "
                                    "identical copy of it, or --images elsewhere, must choose with --labels)"
                                    + labels_note)


def add_train(sub):
    p = sub.add_parser("train", help="train on the labelled data, evaluate, write checkpoint and plots")
    add_config_args(p)
    add_data_args(p)
    p.add_argument("--out", type=output_folder,
                   help="run folder, new or without a run in it (default: runs/train-<date>-<time>); the shipped "
                        "model is not touched")
    p.add_argument("--limit", type=int_at_least(MIN_LIMIT),
                   help=f"use a stratified subset of this many images, {MIN_LIMIT} or more (smoke runs)")
    p.add_argument("--teacher", action="append", metavar="CHECKPOINT",
                   help="distil from this run's model (repeatable; with --distill; trained with the same --seed and "
                        "--val-fraction and --no-refit, so it never saw the validation images)")
    p.set_defaults(run=cmd_train)


def add_ship(sub):
    p = sub.add_parser("ship", help="make a run folder's model the shipped one (checkpoint, ONNX, curves)")
    p.add_argument("run_dir", metavar="RUN", help="run folder written by `train`")
    p.set_defaults(run=cmd_ship)


def add_export(sub):
    p = sub.add_parser("export", help="write the ONNX graph of a checkpoint (uint8 N x 24 x 24 images -> P(open))")
    p.add_argument("--checkpoint", help="checkpoint (default: the shipped eye_clf/shipped/eye_clf.pt)")
    p.add_argument("--out", default="eye_clf.onnx", type=onnx_file, help="ONNX file to write (default: eye_clf.onnx)")
    p.set_defaults(run=cmd_export)


def add_evaluate(sub):
    p = sub.add_parser("evaluate", help="EER, accuracy, AUC and ECE of a checkpoint on a labelled folder, "
                                        "separately on the images it was trained on and the others")
    add_data_args(p)
    p.add_argument("--checkpoint", help="checkpoint, .pt or .onnx (default: the shipped model)")
    p.set_defaults(run=cmd_evaluate)


def add_cv(sub):
    p = sub.add_parser("cv", help="stratified k-fold cross-validation of a training config")
    add_config_args(p)
    add_data_args(p)
    p.add_argument("--folds", type=int_at_least(2), default=FOLDS, help="number of folds (default: %(default)s)")
    p.add_argument("--limit", type=int_at_least(CV_MIN_LIMIT),
                   help=f"use a stratified subset of this many images, {CV_MIN_LIMIT} or more")
    p.add_argument("--out", type=json_file, help="write the per-fold results here (a .json file)")
    p.add_argument("--fold-dir", type=output_folder,
                   help="write each fold's result (foldK.json) and model (foldK.pt) here as it finishes; a rerun with "
                        "the same folder resumes, retraining only the missing folds")
    p.set_defaults(run=cmd_cv)


def add_label(sub):
    p = sub.add_parser("label", help="labeling studio: a local web page to label images with the keyboard")
    p.add_argument("--images", help="folder of the images to label (default: <data>/EyesDataset)")
    p.add_argument("--data", help=f"data folder (default: ${data.DATA_ENV} or ../shared/data)")
    p.add_argument("--labels", required=True, help="labels .xlsx (created listing every image if missing)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", help="the model that suggests labels, most uncertain images first "
                                            "(default: the shipped model)")
    model.add_argument("--no-model", action="store_true", help="label without model suggestions")
    model.add_argument("--review", help="review list from `audit`: review suspicious labels instead")
    p.add_argument("--port", type=int_at_least(0, 65535), default=8765,
                   help="port on 127.0.0.1 (0: a free one; default 8765)")
    p.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    p.set_defaults(run=cmd_label)


def add_audit(sub):
    p = sub.add_parser("audit", help="rank likely label errors (k-fold out-of-fold P(open) + cleanlab)")
    add_config_args(p)
    add_data_args(p, "; rows without a target are left out")
    p.add_argument("--oof", help="CSV of out-of-fold P(open) (img_name, p_open) instead of training")
    p.add_argument("--folds", type=int_at_least(2), default=FOLDS, help="number of folds (default: %(default)s)")
    p.add_argument("--out", default="review.csv", type=csv_file,
                   help="review list CSV (default: review.csv), most suspicious first: img_name, target (the label "
                        "as audited), p_open (out-of-fold), rank (1: most suspicious), score (the out-of-fold "
                        "probability of that label)")
    p.add_argument("--save-oof", type=csv_file,
                   help="also write the out-of-fold P(open) as CSV here (reuse with --oof)")
    p.add_argument("--fold-dir", type=output_folder,
                   help="keep each fold (foldK.json, foldK.pt) here as it finishes; a rerun with the same folder "
                        "resumes, retraining only the missing folds")
    p.set_defaults(run=cmd_audit)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    epilog = "Bad input exits with one 'error: ...' line before any long work."
    if TRAINING_MISSING is not None:
        install = f"the training libraries ({TRAINING_MISSING}): pip install 'eye-clf[train]'"
        command = next((a for a in argv if not a.startswith("-")), None)
        if command in COMMANDS and command != "predict":
            sys.exit(f"error: {command} needs {install}")
        epilog += f" Only predict runs here: {', '.join(c for c in COMMANDS if c != 'predict')} need {install}."
    prog = "eye-clf" if Path(sys.argv[0]).name == "eye-clf" else "python -m eye_clf"  # the console script or -m
    parser = Parser(prog=prog, description=DESCRIPTION, epilog=epilog)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = ((add_predict,) if TRAINING_MISSING is not None else
                (add_train, add_ship, add_export, add_predict, add_evaluate, add_cv, add_label, add_audit))
    for add in commands:
        add(sub)
    return run(parse(parser, sub, argv))


def parse(parser, sub, argv):
    """The parsed flags; an unknown one is refused by its command's parser, whose help lists that command's flags."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def check_data_flag(args):
    """Refuse a --data that would do nothing: --labels and an --images folder other than its EyesDataset/ name all
    that the command reads (with soft labels, data.check_annotated refuses them, saying why)."""
    cfg = getattr(args, "config", None)
    if args.data and args.images and args.labels and not (cfg and cfg.soft_labels):
        own = Path(args.data) / IMAGES_FOLDER
        if not (own.is_dir() and Path(args.images).resolve() == own.resolve()):
            sys.exit(f"error: --data: {args.data} would be ignored, as --images and --labels name the images and "
                     f"their labels; drop --data, or drop --images to read {own}")


def run(args):
    try:
        if getattr(args, "config_flags", False):
            args.config = config_from(args)  # a bad recipe flag is refused before any data is read
        if getattr(args, "data_flags", False):
            check_data_flag(args)
        if getattr(args, "limit", None):
            check_limit(args)
        args.run(args)
    except BrokenPipeError:  # the reader stopped early (`eye-clf predict DIR | head`): no traceback, status 1
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's final flush is silent
        sys.exit(1)
    except (ValueError, OSError, ImportError) as err:  # FileNotFoundError is an OSError; ImportError: an extra
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:  # Ctrl+C: one line, not a traceback (outputs are written whole or not at all)
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
