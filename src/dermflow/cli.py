"""The ``dermflow`` command: each stage callable outside Snakemake."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import yaml

from dermflow.atomic import write_csv
from dermflow.errors import DermflowError
from dermflow.stage import user_error


def _merged_config(paths: Sequence[str]) -> dict:
    """Config files merged in order, as Snakemake merges --configfile, then validated."""
    from snakemake.utils import update_config

    from dermflow.config import validate_config

    merged: dict = {}
    for path in paths:
        update_config(merged, yaml.safe_load(Path(path).read_text()) or {})
    return validate_config(merged)


def _check_config(args: argparse.Namespace) -> None:
    print(yaml.safe_dump(_merged_config(args.configs), sort_keys=False), end="")


def _make_demo(args: argparse.Namespace) -> None:
    from dermflow.data.demo import make_demo_dataset

    meta = make_demo_dataset(args.out, n_images=args.n_images, width=args.width,
                             height=args.height, seed=args.seed)
    print(f"wrote {len(meta)} demo images to {args.out}")


def _download(args: argparse.Namespace) -> None:
    from dermflow.data.download import download_ham10000

    for path in download_ham10000(args.out, external_test=args.external_test):
        print(path)


def _validate(args: argparse.Namespace) -> None:
    from dermflow.data.validate import image_sources, write_validation

    root, out = Path(args.dataset), Path(args.out)
    manifest, quarantine = write_validation(
        root / args.metadata, image_sources(root), on_bad_input=args.on_bad_input,
        threads=args.threads, hint="rerun with --on-bad-input quarantine",
        out_manifest=out / "manifest.csv", out_quarantine=out / "quarantine.csv",
        rejected=out / "quarantine.csv")
    print(f"{len(manifest)} usable images, {len(quarantine)} quarantined")


def _split(args: argparse.Namespace) -> None:
    from dermflow.data.split import split_dataset

    out = Path(args.out)
    settings = {"train": args.train, "val": args.val, "test": args.test, "seed": args.seed}
    summary = split_dataset(args.manifest, args.protocol, settings,
                            out_split=out / "split.csv", out_summary=out / "summary.json")
    print(json.dumps(summary["totals"]))


def _predict(args: argparse.Namespace) -> int:
    import torch

    from dermflow.experiments.predict import model_files, predict_files

    config = _merged_config(args.config) if args.config else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models, images = model_files([args.model, *args.images])
    table = predict_files(models, images, device=device, config=config, tta=args.tta)
    if args.out:
        write_csv(table, args.out)
    else:
        table.to_csv(sys.stdout, index=False, float_format="%.4f")
    bad = int((table["problem"] != "").sum())
    if bad:
        print(f"dermflow: {bad} of {len(table)} image(s) not predicted; their rows give the "
              "problem and reason", file=sys.stderr)
    return 1 if bad else 0


DESCRIPTION = """\
The stages of the dermflow pipeline, one at a time, outside Snakemake: make or
fetch a dataset, validate it, split it, check a config, and predict new images
with a trained classifier. Run 'dermflow COMMAND --help' for a command's
arguments."""  # plain text: argparse prints it as written


def build_parser() -> argparse.ArgumentParser:
    """All subcommands, their arguments and options, each with its help line."""
    parser = argparse.ArgumentParser(prog="dermflow", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('dermflow')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check-config", help="validate config files (merged in order)")
    p.add_argument("configs", nargs="+", metavar="CONFIG",
                   help="YAML config files, merged in order as Snakemake's --configfile merges "
                        "them; the validated result is printed")
    p.set_defaults(func=_check_config)

    p = sub.add_parser("make-demo", help="write the embedded demo dataset")
    p.add_argument("out", metavar="OUT", help="folder to write the images and metadata to")
    p.add_argument("--n-images", type=int, default=320)
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--height", type=int, default=75)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_demo)

    p = sub.add_parser("download", help="fetch HAM10000 from Harvard Dataverse")
    p.add_argument("out", metavar="OUT", help="folder to download into")
    p.add_argument("--external-test", action="store_true",
                   help="also fetch the ISIC 2018 Task 3 test set")
    p.set_defaults(func=_download)

    p = sub.add_parser("validate", help="check a dataset folder, write manifest/quarantine")
    p.add_argument("dataset", metavar="DATASET",
                   help="folder holding the metadata CSV and the image zips or folders")
    p.add_argument("out", metavar="OUT", help="folder for manifest.csv and quarantine.csv")
    p.add_argument("--metadata", default="HAM10000_metadata.csv")
    p.add_argument("--on-bad-input", choices=("fail", "quarantine"), default="fail")
    p.add_argument("--threads", type=int, default=4)
    p.set_defaults(func=_validate)

    p = sub.add_parser("split", help="train/val/test split of a manifest")
    p.add_argument("manifest", metavar="MANIFEST", help="manifest.csv that validate wrote")
    p.add_argument("out", metavar="OUT", help="folder for split.csv and summary.json")
    p.add_argument("--protocol", choices=("grouped", "paper"), default="grouped")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--train", type=float, default=0.7)
    p.add_argument("--val", type=float, default=0.2)
    p.add_argument("--test", type=float, default=0.1)
    p.set_defaults(func=_split)

    p = sub.add_parser("predict", help="class probabilities of image files with a trained "
                                       "classifier (results/experiments/<name>/model.pt)")
    p.add_argument("model", metavar="MODEL",
                   help="a classifier's model file, results/experiments/<name>/model.pt; more "
                        ".pt files or folders of them (a cross-validated experiment's fold "
                        "models) may follow: their probabilities are averaged, as the "
                        "pipeline's fold ensemble")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="JPEG or PNG files; one that validation would set aside gets a row "
                        "naming its problem (and the exit status is 1)")
    p.add_argument("--config", nargs="+", help="the run's config file(s), merged in order: "
                   "checked against the preparation the model records (hair removal, size); "
                   "needed only for model files that record none")
    p.add_argument("--out", help="CSV to write (default: stdout)")
    p.add_argument("--tta", choices=("none", "flip", "dihedral"),
                   help="test-time augmentation (default: the experiment's classifier.tta, "
                        "as the pipeline predicted)")
    p.set_defaults(func=_predict)
    return parser


def _one_line(err: OSError) -> str | None:
    """What an OSError says in one line when the user can fix it (as in a stage, plus a
    missing file named on the command line); None for a bug."""
    known = user_error(err)
    if known is not None:
        return str(known)
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError)) and \
            err.filename:
        return f"cannot read {err.filename}: {err.strerror}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; expected failures print one line, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except DermflowError as err:
        print(f"dermflow: {err}", file=sys.stderr)
    except OSError as err:
        line = _one_line(err)
        if line is None:
            raise
        print(f"dermflow: {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
