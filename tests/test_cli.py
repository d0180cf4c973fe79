"""The ``dermflow`` command: readable help, its version, one-line errors."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from test_io import write_classifier

from dermflow.cli import build_parser, main


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
