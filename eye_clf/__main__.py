"""Command line: ``python -m eye_clf {train,predict,evaluate,cv,label,audit} --help``."""
import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

import pandas as pd

from . import data, metrics
from .train import TrainConfig, atomic_write


def _optional(kind):
    return lambda v: None if v.lower() == "none" else kind(v)


OPTIONAL = {"weights": _optional(str), "input_size": _optional(int)}


def add_config_args(p):
    """One --flag per TrainConfig field, defaulting to the config's default."""
    for f in fields(TrainConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type=OPTIONAL.get(f.name, type(f.default)), default=f.default,
                           metavar=f.name.upper())


def config_from(args):
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def cmd_train(args):
    from .train import run
    cfg = config_from(args)
    res = run(cfg, args.data, args.out, args.limit)
    print(f"trained {cfg.arch}/{cfg.method} (weights: {cfg.weights or 'random init'}) in {res['seconds']:.0f} s, "
          f"{len(res['history'])} epochs; best val loss at epoch "
          f"{min(res['history'], key=lambda r: r['val_loss'])['epoch']}")
    for split in ("val", "test"):
        m = res[split]
        print(f"{split:5s} EER {100 * m['eer']:.2f}% (threshold {m['eer_threshold']:.3f})  "
              f"accuracy {100 * m['accuracy']:.2f}%  AUC {m['auc']:.4f}  ECE {100 * m['ece']:.2f}%")
    print(f"wrote {Path(args.out) / 'eye_clf.pt'}, history.csv/json and train_val_loss_metrics_history.png")


def cmd_export(args):
    from .export import OPSET, export_onnx
    from .predict import DEFAULT_CHECKPOINT
    out = export_onnx(args.checkpoint or DEFAULT_CHECKPOINT, args.out)
    print(f"wrote {out} (ONNX opset {OPSET}): input images uint8 N x 24 x 24, output p_open float32 N")


def expand(paths):
    files = []
    for p in map(Path, paths):
        files.extend(data.list_images(p) if p.is_dir() else [p])
    return files


def cmd_predict(args):
    from .predict import predict_proba
    files = expand(args.paths)
    if not files:
        sys.exit("no image files found in " + ", ".join(args.paths))
    p = predict_proba([str(f) for f in files], checkpoint=args.checkpoint)
    df = pd.DataFrame({"file": [str(f) for f in files], "p_open": p})
    if args.out == "-":
        df.to_csv(sys.stdout, index=False)
    else:
        atomic_write(args.out, lambda tmp: df.to_csv(tmp, index=False))
        print(f"wrote {len(df)} predictions to {args.out}", file=sys.stderr)


def cmd_evaluate(args):
    from .predict import predict_proba
    root = data.data_dir(args.data) if args.images is None or args.labels is None else None
    images_dir = Path(args.images) if args.images else root / "EyesDataset"
    labels = data.read_labels(args.labels or root / "img_name_target.xlsx", images_dir=images_dir)
    p = predict_proba([str(images_dir / n) for n in labels["img_name"]], checkpoint=args.checkpoint)
    m = metrics.summary(labels["target"].to_numpy(), p)
    print(f"{len(p)} images: EER {100 * m['eer']:.2f}% (threshold {m['eer_threshold']:.3f})  accuracy "
          f"{100 * m['accuracy']:.2f}%  accuracy at EER threshold {100 * m['accuracy_at_eer']:.2f}%  "
          f"AUC {m['auc']:.4f}  ECE {100 * m['ece']:.2f}%")


def cmd_cv(args):
    from .cv import cross_val_predict, report
    cfg = config_from(args)
    images, targets, _ = data.load_dataset(args.data, limit=args.limit)
    oof, per_fold = cross_val_predict(images, targets, cfg, args.folds, args.seed)
    print(per_fold.round(4).to_string(index=False))
    print(f"{args.folds}-fold CV ({cfg.arch}, weights: {cfg.weights or 'random init'}): {report(per_fold)}")
    if args.out:
        result = dict(config=vars(cfg), folds=per_fold.to_dict("records"),
                      pooled=metrics.summary(targets, oof))
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))


def cmd_label(args):
    from .studio import serve
    try:
        serve(args.images, args.labels, args.checkpoint, args.review, args.port, not args.no_browser,
              model=not args.no_model)
    except OSError as err:
        sys.exit(f"error: {err}")


def cmd_audit(args):
    from .audit import audit
    images_dir = Path(args.images) if args.images else data.data_dir(args.data) / "EyesDataset"
    labels = data.labels_file(args.labels, args.data)
    review, names, targets, p_open = audit(images_dir, labels, args.oof, config_from(args), args.folds)
    atomic_write(args.out, lambda tmp: review.to_csv(tmp, index=False))
    if args.save_oof:
        oof = pd.DataFrame({"img_name": names, "target": targets, "p_open": p_open})
        atomic_write(args.save_oof, lambda tmp: oof.to_csv(tmp, index=False))
    print(f"{len(review)} of {len(names)} labels look wrong (cleanlab, out-of-fold P(open)); wrote {args.out}\n"
          f"review them: python -m eye_clf label --images {images_dir} --labels COPY.xlsx --review {args.out}\n"
          f"(COPY.xlsx: a copy of {labels} as .xlsx; the studio saves every change into it)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eye_clf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train on the labelled data, evaluate, write checkpoint and plots")
    add_config_args(p)
    p.add_argument("--data", help=f"data folder (default: ${data.DATA_ENV} or ../shared/data)")
    p.add_argument("--out", default="plots_checkpoints", help="output folder (default: plots_checkpoints)")
    p.add_argument("--limit", type=int, help="use a stratified subset of this many images (smoke runs)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("export", help="write the ONNX graph of a checkpoint (uint8 N x 24 x 24 images -> P(open))")
    p.add_argument("--checkpoint", help="checkpoint (default: the shipped eye_clf/shipped/eye_clf.pt)")
    p.add_argument("--out", default="eye_clf.onnx", help="ONNX file to write (default: eye_clf.onnx)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("predict", help="write a CSV (file, p_open) for image files and folders")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--checkpoint", help="checkpoint (default: the shipped plots_checkpoints/eye_clf.pt)")
    p.add_argument("--out", default="-", help="CSV path (default: standard output)")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("evaluate", help="EER, accuracy and AUC of a checkpoint on a labelled folder "
                                        "(use images it was not trained on)")
    p.add_argument("--images", help="image folder (default: <data>/EyesDataset)")
    p.add_argument("--labels", help="labels xlsx/csv (default: <data>/img_name_target.xlsx)")
    p.add_argument("--data", help=f"data folder (default: ${data.DATA_ENV} or ../shared/data)")
    p.add_argument("--checkpoint", help="checkpoint (default: the shipped one)")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("cv", help="stratified k-fold cross-validation of a training config")
    add_config_args(p)
    p.add_argument("--data", help=f"data folder (default: ${data.DATA_ENV} or ../shared/data)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--limit", type=int, help="use a stratified subset of this many images")
    p.add_argument("--out", help="write the per-fold results as JSON here")
    p.set_defaults(run=cmd_cv)

    p = sub.add_parser("label", help="labeling studio: a local web page to label images with the keyboard")
    p.add_argument("--images", required=True, help="folder of the images to label")
    p.add_argument("--labels", required=True, help="labels .xlsx (created listing every image if missing)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", help="the model that suggests labels, most uncertain images first "
                                            "(default: the shipped model)")
    model.add_argument("--no-model", action="store_true", help="label without model suggestions")
    p.add_argument("--review", help="review list from `audit`: review suspicious labels instead")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: a free one; default 8765)")
    p.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    p.set_defaults(run=cmd_label)

    p = sub.add_parser("audit", help="rank likely label errors (k-fold out-of-fold P(open) + cleanlab)")
    add_config_args(p)
    p.add_argument("--images", help="image folder (default: <data>/EyesDataset)")
    p.add_argument("--labels", help="labels xlsx/csv (default: the reference img_name_target.xlsx at the top "
                                    "of the checkout); rows without a target are left out")
    p.add_argument("--data", help=f"data folder (default: ${data.DATA_ENV} or ../shared/data)")
    p.add_argument("--oof", help="CSV of out-of-fold P(open) (img_name, p_open) instead of training")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", default="review.csv", help="review list CSV (default: review.csv)")
    p.add_argument("--save-oof", help="also write the out-of-fold P(open) as CSV here (reuse with --oof)")
    p.set_defaults(run=cmd_audit)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
