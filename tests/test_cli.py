"""The ``dermflow`` command: readable help, its version, one-line errors, and ``predict``
checking each image as validation does, with a row for every file given."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from PIL import Image
from test_io import write_classifier

from dermflow.cli import build_parser, main
from dermflow.data.validate import check_image
from dermflow.labels import CLASSES


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    write_classifier(path)
    return path


def help_texts() -> list[str]:
    """The top-level help and every subcommand's."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them only here
    return [parser.format_help(), *(p.format_help() for p in commands.values())]


def test_help_is_plain_text_and_every_positional_says_what_it_is():
    for text in help_texts():
        assert "``" not in text and "::" not in text and "`" not in text, text
    parser = build_parser()
    for command in parser._subparsers._group_actions[0].choices.values():
        for action in command._positionals._group_actions:
            assert action.help, f"{command.prog} {action.dest} has no help"


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"dermflow {version('dermflow')}"


def test_missing_model_file_is_one_line(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "absent.pt"), str(tmp_path / "a.jpg")]) == 1
    err = capsys.readouterr().err
    assert err == f"dermflow: cannot read {tmp_path / 'absent.pt'}: No such file or directory\n"


def test_truncated_model_file_is_one_line_with_the_rule_that_rebuilds_it(model, tmp_path,
                                                                            capsys):
    broken = tmp_path / "model.pt"
    broken.write_bytes(model.read_bytes()[:100_000])
    assert main(["predict", str(broken), str(tmp_path / "a.jpg")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"dermflow: {broken}: truncated")
    assert "`snakemake --forcerun train_classifier`" in err


def write_images(folder: Path) -> dict[str, str]:
    """Good images and the kinds validation sets aside: name -> path."""
    rng = np.random.default_rng(0)
    paths = {name: str(folder / f"{name}.jpg") for name in
             ("good1", "tiny", "cmyk", "unreadable", "good2")}
    for name in ("good1", "good2"):
        cv2.imwrite(paths[name], rng.integers(0, 256, (45, 60, 3), dtype=np.uint8))
    Image.new("RGB", (1, 1), (200, 120, 90)).save(paths["tiny"])
    Image.new("CMYK", (60, 45), (0, 80, 120, 10)).save(paths["cmyk"])
    Path(paths["unreadable"]).write_bytes(b"\xff\xd8 not really a JPEG")
    paths["missing"] = str(folder / "missing.jpg")
    return paths


def test_predict_writes_a_row_per_image_and_fails_for_the_bad_ones(model, tmp_path, capsys):
    paths = write_images(tmp_path)
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(model), *paths.values(), "--out", str(out)]) == 1
    table = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert list(table.index) == list(paths.values())  # every file, in the order given
    probs = table[[f"prob_{dx}" for dx in CLASSES]]
    for name, path in paths.items():
        policy = check_image(path).problem  # validation's verdict decides predict's
        if name.startswith("good"):
            assert policy is None and table.at[path, "problem"] == ""
            assert table.at[path, "pred"] in CLASSES
            assert np.isclose(probs.loc[path].astype(float).sum(), 1, atol=1e-3)
        else:
            assert policy is not None and table.at[path, "problem"] == policy, name
            assert table.at[path, "pred"] == "" and (probs.loc[path] == "").all()
            assert table.at[path, "reason"]
    assert table.at[paths["tiny"], "problem"] == "too_small"
    assert table.at[paths["cmyk"], "problem"] == "colour_mode"
    assert table.at[paths["unreadable"], "problem"] == "unreadable"
    assert table.at[paths["missing"], "problem"] == "unreadable"
    err = capsys.readouterr().err
    assert "dermflow: 4 of 6 image(s) not predicted" in err


def test_predict_applies_the_configs_minimum_image_side(model, tmp_path):
    paths = write_images(tmp_path)
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(yaml.safe_dump({"image_size": 32, "validation": {"min_side": 50}}))
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(model), paths["good1"], "--out", str(out),
                 "--config", str(REPO / "config.yaml"), str(stricter)]) == 1
    assert pd.read_csv(out)["problem"].tolist() == ["too_small"]  # 60x45: shorter side 45
