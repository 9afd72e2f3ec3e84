"""The controls that need no model, on a tiny prepared dataset."""

from __future__ import annotations

import pytest

from gazerm.data.config import PrepareConfig
from gazerm.data.prepare import prepare
from gazerm.evaluate.baselines import longer_response_accuracy
from tests.data.util import write_jsonl


def test_longer_response_accuracy_counts_equal_lengths_half(tmp_path):
    rows = [
        {"prompt": "a", "chosen": "a long answer", "rejected": "short"},  # longer chosen: 1
        {"prompt": "b", "chosen": "tiny", "rejected": "much longer"},  # shorter chosen: 0
        {"prompt": "c", "chosen": "same", "rejected": "size"},  # equal: 0.5
    ]
    source = {"format": "generic", "path": str(write_jsonl(tmp_path / "pairs.jsonl", rows))}
    config = PrepareConfig(
        sources=[source], output_dir=str(tmp_path / "out"), splits={"test": 1.0}, gaze={"predictor": "none"}
    )
    prepare(config)
    result = longer_response_accuracy(tmp_path / "out")
    assert result.pairs == 3 and result.accuracy == pytest.approx(1.5 / 3)
