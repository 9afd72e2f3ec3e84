"""The real pretrained backbone end to end: SmolLM2-135M-Instruct (from its GGUF file) with LoRA and
GazeConcat, the chat template, HH-RLHF-format data, 2 Ray Train workers with DeepSpeed ZeRO-2 on CPU;
then ``gazerm score`` on the saved model and ``gazerm export`` of it (rewards checked while exporting).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from gazerm.cli import app
from tests.helpers import SMOLLM2, require_smollm2

pytestmark = pytest.mark.slow

TOPICS = [
    "bake bread", "fix a flat tyre", "learn to swim", "plant tomatoes", "write a cover letter",
    "boil an egg", "tie a tie", "save money", "clean a cast iron pan", "train a puppy",
    "start running", "brew coffee", "paint a wall", "fall asleep faster", "study for an exam",
    "make friends in a new city", "change a light bulb", "keep houseplants alive", "cook rice",
    "prepare for a job interview", "reduce screen time", "fold a fitted sheet", "sharpen a knife",
    "care for a cat", "back up my phone", "learn a language", "repot a cactus", "clean windows",
    "grow basil", "stretch after a run", "store fresh herbs", "defrost a freezer",
]  # fmt: skip


def write_hh_rlhf(path: Path) -> Path:
    """HH-RLHF's real format: chosen/rejected transcripts that differ in the last Assistant reply. The
    chosen reply helps; the rejected one brushes the user off (a rule a reward model picks up quickly)."""
    with path.open("w") as handle:
        for index, topic in enumerate(TOPICS):
            prompt = f"\n\nHuman: How do I {topic}?\n\nAssistant:"
            chosen = f" Happy to help! To {topic}, start small, follow a simple plan step by step (#{index})."
            rejected = " I don't know. Figure it out yourself."
            handle.write(json.dumps({"chosen": prompt + chosen, "rejected": prompt + rejected}) + "\n")
    return path


def test_smollm2_trains_with_ray_and_deepspeed_and_its_export_scores(tmp_path: Path, monkeypatch, ray_local):
    require_smollm2()
    monkeypatch.chdir(tmp_path)
    source = write_hh_rlhf(tmp_path / "hh.jsonl")
    settings = [
        "model.backbone=" + SMOLLM2,
        "model.fusion=concat",
        "data.template=chat",
        "data.max_length=96",
        f"data.prepare.sources=[{{format: hh_rlhf, path: {source}}}]",
        "data.prepare.output_dir=runs/data/hh",
        "data.prepare.gaze.backend=local",
        "optim.lr=2e-3",
        "optim.warmup_ratio=0",
        "run.micro_batch_size=2",
        "run.max_steps=6",
        "run.eval_every=6",
        "output_dir=runs/smollm2",
    ]
    result = CliRunner().invoke(app, ["train", *[arg for s in settings for arg in ("--set", s)]])
    assert result.exit_code == 0, result.output

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("gazerm").experiment_id])
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    losses = [m.value for m in history]
    assert len(losses) == 6 and statistics.mean(losses[-2:]) < losses[0]
    assert run.data.metrics["train/tokens_per_s"] > 0
    inputs = json.loads((tmp_path / "runs" / "smollm2" / "model" / "inputs.json").read_text())
    assert inputs["template"] == "chat"

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"prompt": "How do I grow basil?", "response": response}) + "\n"
            for response in ("Happy to help! Water it often and give it sun.", "Figure it out yourself.")
        )
    )
    scored = CliRunner().invoke(app, ["score", "runs/smollm2/model", str(rows), "--output", "scored.jsonl"])
    assert scored.exit_code == 0, scored.output
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(rewards) == 2 and all(math.isfinite(r) for r in rewards) and rewards[0] != rewards[1]

    exported = CliRunner().invoke(app, ["export", "runs/smollm2/model", "hf"])
    assert exported.exit_code == 0, exported.output
    assert "gazerm's modeling code" in exported.output  # GazeConcat needs it
    model = AutoModelForSequenceClassification.from_pretrained("hf", trust_remote_code=True)
    assert model.reward.transformer.config.model_type == "llama"  # the real backbone, LoRA merged
