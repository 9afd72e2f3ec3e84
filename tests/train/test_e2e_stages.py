"""Staged training end to end: a general RM, then a domain stage continued from it (2 Ray Train runs).

General data: the synthetic readability set. Domain data: DSP-domain files whose academy reply is
the other replies' words plus a domain keyword, so a rule the general stage never saw and the
domain stage learns in a few steps.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.loaders.dsp import RESPONSE_KEYS
from gazerm.data.synthetic import EASY_WORDS, TOPICS, write_readability_preferences
from gazerm.evaluate.offline import read_split
from gazerm.track.mlflow_tracking import child_runs
from gazerm.train.stages import StagedJobConfig, run_stages

pytestmark = pytest.mark.slow

DOMAIN_KEYWORD = "research"


def academy_preferences(n: int, seed: int) -> list[dict]:
    """DSP-domain records: every reply shuffles the same words; only the academy one adds the keyword."""
    rng = random.Random(seed)
    records = []
    for index in range(n):
        words = [rng.choice(EASY_WORDS) for _ in range(rng.randint(8, 12))] + [rng.choice(TOPICS)]
        responses = {key: " ".join(rng.sample(words, len(words))) + "." for key in RESPONSE_KEYS}
        academy = rng.sample(words, len(words))
        academy.insert(rng.randint(0, len(academy)), DOMAIN_KEYWORD)
        responses["academy"] = " ".join(academy) + "."
        records.append({"query": f"Tell me about {rng.choice(TOPICS)} (#{index}).", "responses": responses})
    return records


def _prepare(source: SourceSpec, output_dir: Path) -> dict:
    return PrepareConfig(
        sources=[source],
        output_dir=str(output_dir),
        splits={"train": 0.8, "validation": 0.2, "test": 0.0},
        gaze=GazeSpec(predictor="reading_model", backend="local"),
    ).model_dump(mode="json")


def tiny_staged_job(root: Path) -> StagedJobConfig:
    """The shipped DSP job's shape on local data: general stage, then academy, both evaluated."""
    general = write_readability_preferences(root / "general.jsonl", n=240, seed=3)
    academy = root / "academy.json"
    academy.write_text(json.dumps(academy_preferences(100, seed=4)))
    return StagedJobConfig.model_validate(
        {
            "base": {
                "name": "staged",
                "output_dir": str(root / "staged"),
                "data": {"max_length": 64},
                "model": {"pooling": "last"},
                "loss": {"lm_loss_coeff": 0.1},
                "optim": {"lr": 5e-3, "warmup_ratio": 0.0},
                # one worker: a run starts ~2.5 s sooner; 2-rank runs are tests/train/test_e2e_train.py's
                "run": {"num_workers": 1, "micro_batch_size": 16, "max_steps": 4, "eval_every": 6},
                "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
            },
            "stages": [
                {
                    "name": "general",
                    "prepare": _prepare(SourceSpec(format="generic", path=str(general)), root / "general"),
                },
                {
                    "name": "academy",
                    "prepare": _prepare(
                        SourceSpec(format="dsp_domain", path=str(academy), options={"domain": "academy"}),
                        root / "academy",
                    ),
                    "overrides": {"run.max_steps": 6},
                },
            ],
        }
    )


def _validation_pairs(dataset_dir: str) -> int:
    return sum(len(row["pairs"]) for row in read_split(dataset_dir, "validation"))


def test_domain_stage_continues_from_the_general_model(tmp_path: Path, ray_local, capfd):
    config = tiny_staged_job(tmp_path)
    outcome = run_stages(config)

    accuracy = {(r.stage, r.eval_set): r for r in outcome.results}
    assert set(accuracy) == {(s, e) for s in ("general", "academy") for e in ("general", "academy")}
    for (_, eval_set), result in accuracy.items():
        assert 0.0 <= result.accuracy <= 1.0
        assert result.pairs == _validation_pairs(str(tmp_path / eval_set))
    assert accuracy["academy", "academy"].accuracy >= accuracy["general", "academy"].accuracy

    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["stage/academy/academy/accuracy"] == accuracy["academy", "academy"].accuracy
    stages = {run.info.run_name: run for run in child_runs(outcome.tracking_uri, outcome.parent_run_id)}
    assert set(stages) == {"staged-general", "staged-academy"}
    assert stages["staged-general"].data.params["model.init_from"] == "None"
    assert stages["staged-academy"].data.params["model.init_from"] == outcome.model_dirs["general"]
    assert "| academy |" in capfd.readouterr().out
