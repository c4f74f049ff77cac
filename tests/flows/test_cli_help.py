"""`avff --help`: plain text, a version, and help on every option of the pipeline's commands."""

import argparse
import subprocess
import sys

import pytest

from flows.cli import build_parser

COMMANDS = ("ingest", "sample", "train", "evaluate", "predict", "cv", "ablate")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_top_level_help_is_plain_text_with_a_version():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "``" not in out.stdout and ":func:" not in out.stdout
    assert "avff ingest --data VIDEOS --out SHARDS" in out.stdout
    version = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith("avff ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command):
    parser, _ = build_parser()
    sub = _subparsers(parser)[command]
    missing = [a.option_strings[0] for a in sub._actions
               if a.option_strings and a.help is None and not isinstance(a, argparse._HelpAction)]  # fmt: skip
    assert not missing, f"avff {command}: options without help: {missing}"
    text = sub.format_help()
    assert "``" not in text


def test_top_level_help_says_which_commands_are_flow_runs():
    parser, _ = build_parser()
    text = " ".join(parser.format_help().split())
    assert "Each command is a Prefect flow run" not in text
    assert "ingest, train, evaluate, cv and ablate are Prefect flow runs" in text
    assert "predict, sample, stack and web start no flow run" in text


@pytest.mark.parametrize(
    ("command", "default"), [("predict", "avff-dfdc@champion"), ("evaluate", "avff-dfdc@champion")]
)
def test_model_help_shows_the_default_and_the_forms(command, default):
    parser, _ = build_parser()
    text = " ".join(_subparsers(parser)[command].format_help().split())
    assert f"(default: {default})" in text
    assert "NAME@alias" in text and "models:/NAME/VERSION" in text
