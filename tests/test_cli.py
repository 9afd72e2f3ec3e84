"""The command line: every subcommand is listed and explains itself; bad configs fail with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gazerm.cli import PublishedPredictor, app
from gazerm.features.fmv_published import PUBLISHED

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = ["demo-data", "prepare", "train", "train-staged", "score", "rerank", "winrate", "consistency"]
    for command in [*commands, "export", "evaluate", "serve", "tune", "select", "gaze", "bench"]:
        assert command in result.output


def test_the_command_line_starts_without_the_heavy_libraries():
    """Each command imports what it runs on when it runs: the command line itself (its help, the choices
    of ``gaze download``) loads no numpy, pyarrow, torch or Ray."""
    code = "import sys, gazerm.cli; print(sorted({'numpy', 'pyarrow', 'torch', 'ray'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert (loaded.returncode, loaded.stdout.strip()) == (0, "[]"), loaded.stderr
    assert [choice.value for choice in PublishedPredictor] == list(PUBLISHED) == ["fmv1", "fmv2"]


def test_a_trial_hands_its_run_to_ray_train_without_the_workers_libraries():
    """A search's trial process (and a cluster job's driver) only hands a run to Ray Train: importing
    the training driver and the trial loads none of transformers, peft or DeepSpeed (seconds a trial)."""
    heavy = "{'transformers', 'peft', 'deepspeed'}"
    code = f"import sys, gazerm.train.job, gazerm.tune.trial; print(sorted({heavy} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert (loaded.returncode, loaded.stdout.strip()) == (0, "[]"), loaded.stderr


def test_bad_override_is_a_clear_error():
    result = CliRunner().invoke(app, ["train", "--set", "run.zero_stage=7"])
    assert result.exit_code == 2
    assert "run.zero_stage" in result.output


def test_gaze_prints_five_features_per_word():
    result = CliRunner().invoke(app, ["gaze", "predict", "The epistemological cat sat."])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["word", "nFix", "FFD", "GPT", "TRT", "fixProp"]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[1:]}
    assert set(rows) == {"The", "epistemological", "cat", "sat."}
    assert rows["epistemological"][3] > rows["cat"][3]  # long rare words are read longer (TRT)


@pytest.mark.parametrize(
    ("kind", "source_format", "responses"),
    [
        ("pairs", "generic", 2),
        ("ratings", "helpsteer2", 2),
        ("lists", "text_score", 4),
        ("implicit", "generic", 2),
    ],
)
def test_demo_data_writes_each_kind_in_its_loader_format(tmp_path, kind, source_format, responses):
    from gazerm.data.sources import iter_source

    output = tmp_path / ("implicit" if kind == "implicit" else "data.jsonl")
    result = CliRunner().invoke(app, ["demo-data", str(output), "--kind", kind, "--rows", "6"])
    assert result.exit_code == 0, result.output
    paths = result.output.split()
    examples = list(iter_source(source_format, paths[0]))
    assert len(examples) == 6 and all(len(example.responses) == responses for example in examples)
    if kind == "implicit":
        assert paths[1].endswith("sessions.jsonl") and Path(paths[1]).stat().st_size > 0


@pytest.mark.slow  # starts Ray
def test_bad_training_data_stops_train_naming_file_row_and_field(tmp_path, ray_local):
    data = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."},
        {"prompt": "Hi?", "chosen": " ", "rejected": "No."},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = [
        f"data.prepare.sources=[{{format: generic, path: {data}}}]",
        f"data.prepare.output_dir={tmp_path / 'shards'}",
        "data.prepare.gaze.backend=local",
        f"output_dir={tmp_path / 'run'}",
    ]
    result = CliRunner().invoke(app, ["train", *(arg for s in settings for arg in ("--set", s))])
    assert result.exit_code == 2, result.output
    assert f"{data}, row 2, field 'chosen'" in result.output
    assert not (tmp_path / "run").exists()  # stopped before any training


@pytest.mark.slow  # starts Ray
def test_a_config_error_raised_in_the_workers_is_one_line_and_exit_2(tmp_path, ray_local):
    """The tiny tokenizer has no chat template: the workers find out, the user reads one line, and the
    run ends there rather than restarting its workers run.max_failures (3) times into the same error."""
    settings = [
        "data.template=chat",
        "data.synthetic_rows=40",
        "data.prepare.gaze.backend=local",
        f"data.prepare.output_dir={tmp_path / 'shards'}",
        f"output_dir={tmp_path / 'run'}",
        "run.max_steps=1",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = CliRunner().invoke(app, ["train", *(arg for s in settings for arg in ("--set", s))])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    # Ray streams the workers' own log lines in meanwhile; gazerm's is one error line.
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: data.template=chat: tokenizer")
    assert errors[0].endswith("has no chat template; use data.template=plain")


def test_every_command_maps_a_gazerm_error_to_one_line_and_exit_2(tmp_path: Path):
    """The boundary is in one place: score's missing model directory is a PathNotFoundError raised deep
    in gazerm.model.io, and it reaches the user as one red line, not a traceback."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "Hi?", "response": "Hello."}) + "\n")
    result = CliRunner().invoke(app, ["score", str(tmp_path / "no-model"), str(rows), "-o", "out.jsonl"])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: {tmp_path / 'no-model'}: not a saved reward model (no reward_model.json)"
    )


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only GazermError is the user's to fix; any other exception propagates (exit 1 with its traceback)."""
    import gazerm.features.featurize as featurize

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(featurize, "build_predictor", broken)
    result = CliRunner().invoke(app, ["gaze", "predict", "Some text."])
    assert result.exit_code == 1 and isinstance(result.exception, ZeroDivisionError)


def test_plan_prints_the_estimate_and_refuses_a_job_that_does_not_fit_with_settings_that_do():
    fits = CliRunner().invoke(app, ["plan"])
    assert fits.exit_code == 0, fits.output
    assert "| activations |" in fits.output and "fits: each worker needs about" in fits.output
    too_big = ["plan", "--node-memory-gib", "6", "--set", "run.micro_batch_size=256"]
    refused = CliRunner().invoke(app, too_big)
    assert refused.exit_code == 2
    assert "does not fit" in refused.output and "--set run.micro_batch_size=" in refused.output


def test_train_refuses_a_job_that_cannot_fit_this_machine_before_it_starts(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    command = ["train", "--set", f"output_dir={tmp_path}/run", "--set", "run.micro_batch_size=20000"]
    result = CliRunner().invoke(app, [*command, "--set", "data.max_length=1024"])
    assert result.exit_code == 2
    assert "memory: does not fit" in result.output and "run.memory_check=false" in result.output
    assert not (tmp_path / "run").exists()  # refused before anything was written
