"""The command line: every subcommand is listed and explains itself; bad configs fail with exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from gazerm.cli import app


def test_help_lists_every_subcommand():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("prepare", "train", "score", "gaze", "demo-data", "bench"):
        assert command in result.output


def test_bad_override_is_a_clear_error():
    result = CliRunner().invoke(app, ["train", "--set", "run.zero_stage=7"])
    assert result.exit_code == 2
    assert "run.zero_stage" in result.output


def test_gaze_prints_five_features_per_word():
    result = CliRunner().invoke(app, ["gaze", "The epistemological cat sat."])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["word", "nFix", "FFD", "GPT", "TRT", "fixProp"]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[1:]}
    assert set(rows) == {"The", "epistemological", "cat", "sat."}
    assert rows["epistemological"][3] > rows["cat"][3]  # long rare words are read longer (TRT)
