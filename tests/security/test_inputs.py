"""Malformed and hostile input through the real entry points (issue #24, the input half).

Every input a user can fix ends as one line naming the file (and the row and field where there are
ones) with exit code 2, or, with ``on_error: quarantine``, as a quarantine record; never as a
traceback. Data files go through ``gazerm.data.prepare.prepare`` and ``gazerm prepare`` (typer's
CliRunner, the CLI's one error boundary included); config files through ``gazerm prepare`` and
``gazerm train`` (which fails on its config before starting anything).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.errors import DataError
from gazerm.data.prepare import QUARANTINE_NAME, prepare
from gazerm.data.readers import UnreadableFileError
from gazerm.data.shards import MANIFEST_NAME
from gazerm.data.validate import MAX_TEXT_CHARS

GOOD = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}


def _jsonl(path: Path, second_line: str) -> Path:
    """A JSONL file whose first row is good and whose second (row 2) is ``second_line``, raw."""
    path.write_text(json.dumps(GOOD) + "\n" + second_line + "\n", encoding="utf-8")
    return path


def long_csv_field(path: Path) -> Path:
    """Row 3's `chosen` is longer than Python's csv field limit (131,072) and than MAX_TEXT_CHARS."""
    path = path.with_suffix(".csv")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "chosen", "rejected"])
        writer.writerow(["Q1", "a" * 200_000, "b"])  # long but legitimate: loads
        writer.writerow(["Q2", "c" * (MAX_TEXT_CHARS + 1), "d"])
        writer.writerow(["Q3", "e", "f"])
    return path


def corrupt_parquet_pages(path: Path) -> Path:
    """A Parquet file whose footer is intact but whose data pages are overwritten."""
    path = path.with_suffix(".parquet")
    rows = 500
    table = pa.table(
        {"prompt": [f"Q{i}" for i in range(rows)], "chosen": ["a" * 40] * rows, "rejected": ["b"] * rows}
    )
    pq.write_table(table, path, compression="none")
    raw = bytearray(path.read_bytes())
    raw[100:2100] = b"\xff" * 2000
    path.write_bytes(bytes(raw))
    return path


def huge_integer_margin(path: Path) -> Path:
    line = json.dumps(GOOD)[:-1] + ', "margin": ' + "9" * 400 + "}"
    return _jsonl(path.with_suffix(".jsonl"), line.replace("Name a colour.", "Say hi."))


def longer_integer_than_python_parses(path: Path) -> Path:
    line = json.dumps(GOOD)[:-1] + ', "margin": ' + "9" * 5000 + "}"
    return _jsonl(path.with_suffix(".jsonl"), line)


def deeply_nested_prompt(path: Path) -> Path:
    depth = 200_000
    return _jsonl(path.with_suffix(".jsonl"), '{"prompt": ' + "[" * depth + "]" * depth + ', "chosen": "a"}')


def lone_surrogate(path: Path) -> Path:
    return _jsonl(path.with_suffix(".jsonl"), '{"prompt": "Hi \\ud800", "chosen": "a", "rejected": "b"}')


def deeply_nested_json_array(path: Path) -> Path:
    path = path.with_suffix(".json")
    depth = 200_000
    path.write_text("[" + json.dumps(GOOD) + ", " + "[" * depth + "]" * depth + "]", encoding="utf-8")
    return path


@dataclass(frozen=True)
class BadData:
    """A malformed input file and what must come of it: the row and field named (None: the whole file
    is unreadable, quarantined as one record), words of the message, and the examples that load."""

    write: Callable[[Path], Path]
    row: int | None
    field: str | None
    words: str
    examples: int
    whole_file: bool = False


BAD_DATA = {
    "csv-field-over-csv-limit-and-text-cap": BadData(
        long_csv_field, 3, "responses[0]", "more than the 1,000,000", examples=2
    ),
    "parquet-corrupt-data-pages": BadData(
        corrupt_parquet_pages, None, None, "does not decode", examples=0, whole_file=True
    ),
    "integer-margin-400-digits": BadData(huge_integer_margin, 2, "margin", "finite number", examples=1),
    "integer-over-python-digit-limit": BadData(
        longer_integer_than_python_parses, 2, None, "integer string conversion", examples=1
    ),
    "prompt-nested-200k-deep": BadData(deeply_nested_prompt, 2, None, "nested too deeply", examples=1),
    "lone-surrogate-in-prompt": BadData(lone_surrogate, 2, "prompt", "lone surrogate U+D800", examples=1),
    "json-array-nested-200k-deep": BadData(
        deeply_nested_json_array, None, None, "nested too deeply", examples=0, whole_file=True
    ),
}


def _config(source: Path, output: Path, on_error: str = "raise") -> PrepareConfig:
    return PrepareConfig(
        sources=[SourceSpec(format="generic", path=str(source))],
        output_dir=str(output),
        splits={"train": 1.0},
        on_error=on_error,
        gaze=GazeSpec(predictor="none"),
    )


def _write_yaml(path: Path, config: PrepareConfig) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    return path


def _error_line(output: str) -> str:
    """The CLI's one error line; no traceback anywhere in the output."""
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


def _where(bad: BadData, source: Path) -> str:
    where = str(source) if bad.row is None else f"{source}, row {bad.row}"
    return where + (f", field '{bad.field}'" if bad.field else "")


@pytest.mark.parametrize("case", BAD_DATA, ids=list(BAD_DATA))
def test_bad_data_raises_one_error_naming_file_row_and_field(tmp_path: Path, case: str) -> None:
    bad = BAD_DATA[case]
    source = bad.write(tmp_path / "input")
    with pytest.raises(DataError) as caught:
        prepare(_config(source, tmp_path / "out"))
    error = caught.value
    assert (error.file, error.row, error.field) == (str(source), bad.row, bad.field)
    assert isinstance(error, UnreadableFileError) == bad.whole_file
    assert bad.words in error.message
    assert len(str(error).splitlines()) == 1 and len(str(error)) < 400
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


@pytest.mark.parametrize("case", BAD_DATA, ids=list(BAD_DATA))
def test_bad_data_is_quarantined(tmp_path: Path, case: str) -> None:
    bad = BAD_DATA[case]
    source = bad.write(tmp_path / "input")
    config = _config(source, tmp_path / "out", on_error="quarantine")
    if not bad.examples:  # a whole file lost: nothing left to prepare, and that is said in one line
        with pytest.raises(DataError, match="no usable examples"):
            prepare(config)
        return
    manifest = prepare(config)
    assert manifest.rows("train") == bad.examples
    (record,) = [json.loads(line) for line in (tmp_path / "out" / QUARANTINE_NAME).read_text().splitlines()]
    assert (record["file"], record["row"], record["field"]) == (str(source), bad.row, bad.field)
    assert record["whole_file"] is bad.whole_file and bad.words in record["error"]


def test_an_unreadable_file_is_one_quarantine_record_beside_good_sources(tmp_path: Path) -> None:
    """A file that stops decoding part-way gives no examples at all (none of it is trusted)."""
    corrupt = corrupt_parquet_pages(tmp_path / "corrupt")
    good = _jsonl(tmp_path / "good.jsonl", json.dumps({**GOOD, "prompt": "Say hi."}))
    config = _config(good, tmp_path / "out", on_error="quarantine")
    sources = [*config.sources, SourceSpec(format="generic", path=str(corrupt))]
    config = config.model_copy(update={"sources": sources})
    manifest = prepare(config)
    assert manifest.rows("train") == 2
    assert manifest.quarantine["whole_files"] == 1 and manifest.quarantine["count"] == 1
    assert [source["examples"] for source in manifest.sources] == [2, 0]


@pytest.mark.parametrize("case", BAD_DATA, ids=list(BAD_DATA))
def test_gazerm_prepare_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    bad = BAD_DATA[case]
    source = bad.write(tmp_path / "input")
    config = _write_yaml(tmp_path / "prepare.yaml", _config(source, tmp_path / "out"))
    result = CliRunner().invoke(app, ["prepare", str(config)])
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert line.startswith(f"error: {_where(bad, source)}: ") and bad.words in line


@pytest.mark.parametrize("case", [case for case, bad in BAD_DATA.items() if bad.examples])
def test_gazerm_prepare_quarantine_goes_on(tmp_path: Path, case: str) -> None:
    bad = BAD_DATA[case]
    source = bad.write(tmp_path / "input")
    config = _write_yaml(tmp_path / "prepare.yaml", _config(source, tmp_path / "out"))
    result = CliRunner().invoke(app, ["prepare", str(config), "--quarantine"])
    assert result.exit_code == 0, result.output
    assert "quarantined 1" in result.output


def test_a_long_csv_field_within_the_cap_loads(tmp_path: Path) -> None:
    source = tmp_path / "long.csv"
    text = "word " * 40_000  # 200,000 characters, over Python's default csv field limit
    with source.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["prompt", "chosen", "rejected"], ["Q", text, "short"]])
    manifest = prepare(_config(source, tmp_path / "out"))
    table = pq.read_table(manifest.shard_paths(tmp_path / "out", "train")[0])
    assert table.column("responses").to_pylist() == [[text, "short"]]


# Configs: (what the file holds, or how it is made; the --set overrides; words of the one line)
def _valid(tmp_path: Path) -> dict:
    source = _jsonl(tmp_path / "good.jsonl", json.dumps({**GOOD, "prompt": "Say hi."}))
    return _config(source, tmp_path / "out").model_dump(mode="json")


def yaml_syntax_error(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("sources:\n  - format: generic\n    path: [unclosed\noutput_dir: out\n", encoding="utf-8")
    return path


def config_is_a_directory(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    return tmp_path / "configs"


def config_not_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"output_dir: caf\xe9\n")
    return path


def list_root(tmp_path: Path) -> Path:
    path = tmp_path / "list.yaml"
    path.write_text("- output_dir: out\n- rows_per_shard: 3\n", encoding="utf-8")
    return path


def output_dir_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "taken").write_text("not a directory")
    path = tmp_path / "file.yaml"
    path.write_text(yaml.safe_dump({**_valid(tmp_path), "output_dir": str(tmp_path / "taken")}))
    return path


def output_dir_inside_a_file(tmp_path: Path) -> Path:
    (tmp_path / "taken").write_text("not a directory")
    path = tmp_path / "file.yaml"
    path.write_text(yaml.safe_dump({**_valid(tmp_path), "output_dir": str(tmp_path / "taken" / "out")}))
    return path


def nan_split_fraction(tmp_path: Path) -> Path:
    path = tmp_path / "nan.yaml"
    data = {**_valid(tmp_path), "splits": {"train": 0.5, "validation": 0.5, "test": "PLACEHOLDER"}}
    path.write_text(yaml.safe_dump(data).replace("PLACEHOLDER", ".nan"))
    return path


def valid_config(tmp_path: Path) -> Path:
    path = tmp_path / "valid.yaml"
    path.write_text(yaml.safe_dump(_valid(tmp_path)))
    return path


# Whole files every command reads the same way, then a prepare config's own fields.
BAD_CONFIG_FILES = {
    "yaml-syntax-error": (yaml_syntax_error, [], "not valid YAML"),
    "config-is-a-directory": (config_is_a_directory, [], "is a directory"),
    "config-not-utf8": (config_not_utf8, [], "not UTF-8"),
    "list-root": (list_root, [], "expected a mapping"),
    "list-root-with-set": (list_root, ["--set", "rows_per_shard=3"], "expected a mapping"),
}
BAD_PREPARE_CONFIGS = {
    "output-dir-is-a-file": (output_dir_is_a_file, [], "an existing file, not a directory"),
    "output-dir-inside-a-file": (output_dir_inside_a_file, [], "an existing file, not a directory"),
    "nan-split-fraction": (nan_split_fraction, [], "splits"),
    "nan-split-fraction-by-set": (valid_config, ["--set", "splits.test=.nan"], "splits"),
    "override-value-not-yaml": (valid_config, ["--set", "rows_per_shard=[1"], "not valid YAML"),
}
BAD_CONFIGS = [
    *((command, case, *spec) for case, spec in BAD_CONFIG_FILES.items() for command in ("prepare", "train")),
    *(("prepare", case, *BAD_PREPARE_CONFIGS[case]) for case in BAD_PREPARE_CONFIGS),
]


@pytest.mark.parametrize(
    ("command", "case", "make", "overrides", "words"),
    BAD_CONFIGS,
    ids=[f"{command}-{case}" for command, case, *_ in BAD_CONFIGS],
)
def test_bad_config_exits_2_with_one_line_naming_it(
    tmp_path: Path, command: str, case: str, make: Callable[[Path], Path], overrides: list[str], words: str
) -> None:
    path = make(tmp_path)
    result = CliRunner().invoke(app, [command, str(path), *overrides])
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert words in line
    assert str(path) in line or "override" in line or "output_dir" in line


def test_train_job_output_dir_that_is_a_file_and_nan_numbers_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a directory")
    result = CliRunner().invoke(app, ["train", "--set", f"output_dir={tmp_path / 'taken'}"])
    assert result.exit_code == 2 and "an existing file" in _error_line(result.output)
    for override in ("optim.lr=.nan", "optim.lr=.inf", "loss.lm_loss_coeff=.nan"):
        result = CliRunner().invoke(app, ["train", "--set", override])
        assert result.exit_code == 2, (override, result.output)
        assert override.split("=")[0] in _error_line(result.output)


def test_nan_fraction_never_reaches_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finite number"):
        PrepareConfig(
            sources=[SourceSpec(format="generic", path="x.jsonl")],
            output_dir=str(tmp_path / "out"),
            splits={"train": float("nan"), "validation": 0.5, "test": 0.5},
        )


def test_foreign_split_folders_are_refused_and_kept(tmp_path: Path) -> None:
    """`gazerm prepare` into a directory holding a train/ folder it did not write: exit 2, nothing
    deleted; with --force it writes beside it, still deleting nothing."""
    config = valid_config(tmp_path)
    mine = tmp_path / "out" / "train" / "mine.parquet"
    mine.parent.mkdir(parents=True)
    mine.write_text("someone else's")
    result = CliRunner().invoke(app, ["prepare", str(config)])
    assert result.exit_code == 2
    assert "--force" in _error_line(result.output)
    assert mine.read_text() == "someone else's" and not (tmp_path / "out" / MANIFEST_NAME).exists()
    result = CliRunner().invoke(app, ["prepare", str(config), "--force"])
    assert result.exit_code == 0, result.output
    assert mine.read_text() == "someone else's" and (tmp_path / "out" / MANIFEST_NAME).exists()
