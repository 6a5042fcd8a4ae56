"""Every command's ``--help``: examples keep their line continuations and fit 80 columns."""

from __future__ import annotations

import re

import pytest
from support.cli_tree import all_commands

from credence.cli import main
from credence.cli.command import fold_example

# What a lost backslash-newline leaves: a run of spaces inside a command line.
JOINED = re.compile(r"\S {3,}--")


@pytest.mark.parametrize("name", all_commands())
def test_help_examples_keep_their_continuations(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*name.split(), "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for line in text.splitlines():
        if line.lstrip().startswith("credence "):
            assert not JOINED.search(line), line
            assert len(line) <= 80, line


def test_consent_request_example_shows_its_backslashes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["consent", "request", "--help"])
    text = capsys.readouterr().out
    assert "--purpose credit_assessment \\\n      --kinds blacklist,credit" in text


def test_a_joined_line_is_folded_again() -> None:
    joined = "  credence me contest --key k --agency court       --statement x"
    assert fold_example(joined) == ["  credence me contest --key k --agency court --statement x"]
    long = "  credence node install --dir ./court --cert court-1.crt --ca ca.crt --manifest m.env"
    folded = fold_example(long)
    assert folded == [
        "  credence node install --dir ./court --cert court-1.crt --ca ca.crt \\",
        "      --manifest m.env",
    ]
