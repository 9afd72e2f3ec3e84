"""The shipped IFLLM table (``jobs/ifllm_reproduce.yaml``) run end to end on a release-layout set whose
preferences show only in behaviour: grouped folds by worker, the frozen-backbone job in process (a tiny
backbone here, SmolLM2 as shipped), the length control, and paired per-fold differences. Implicit rows
must find the signal, text alone must not."""

from __future__ import annotations

import pytest

from gazerm.config import load_config
from gazerm.tune.reproduce import ReproduceConfig, run_reproduction
from tests.data.ifllm_fixture import write_behaviour_decided_release
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # 20 frozen-backbone runs in process (no Ray), about a minute


def test_the_shipped_ifllm_table_finds_a_behaviour_signal_and_not_a_text_one(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("GAZERM_IFLLM_DIR", str(write_behaviour_decided_release(tmp_path, 10, 12, seed=4)))
    monkeypatch.setenv("GAZERM_CACHE_DIR", str(tmp_path / "cache"))
    spec = load_config(
        ReproduceConfig,
        ROOT / "jobs" / "ifllm_reproduce.yaml",
        {"overrides": _small(tmp_path), "compare": [["text+implicit", "text"], ["implicit", "length"]]},
    )
    outcome = run_reproduction(spec, only=["length", "text", "implicit", "text+implicit"])

    rows = {row.row: row for row in outcome.rows}
    assert sorted(rows["text"].values) == [0, 1, 2, 3, 4]  # every fold finished
    assert 0.3 <= rows["text"].mean <= 0.7  # the answers' words say nothing
    assert rows["implicit"].mean >= 0.9 and rows["text+implicit"].mean >= 0.85
    assert 0.3 <= rows["length"].mean <= 0.7
    gain = {(c.a, c.b): c for c in outcome.comparisons}[("text+implicit", "text")]
    assert len(gain.differences) == 5 and gain.interval[0] > 0  # the paired interval excludes no gain
    table = (tmp_path / "runs" / "reproduce" / "reproduce.md").read_text()
    assert "text+implicit" in table and "0.64" in table  # the published number beside its row


def _small(tmp_path) -> dict:
    """The shipped job at test size: a tiny backbone, outputs under ``tmp_path``."""
    return {
        "output_dir": str(tmp_path / "runs"),
        "data.prepare.output_dir": str(tmp_path / "data" / "ifllm"),
        "data.template": "plain",
        "data.max_length": 64,
        "model.backbone": "tiny-llama",
        "optim.lr": 0.01,
        "run.epochs": 10,
        "run.eval_every": 10,
        "tracking.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
