"""Controls that need no model: what a rule alone scores on a split, the bar a trained reward model must
clear (e.g. preferring the longer response, a bias human labels and reward models are known to share)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from gazerm.evaluate.offline import PairAccuracy, pair_accuracy, read_split

Control = Literal["longer_response"]


def longer_response_accuracy(dataset_dir: str | Path, split: str = "test") -> PairAccuracy:
    """Pairwise accuracy of "the longer response (in characters) is the chosen one"; equal lengths count
    half, as a model's tied rewards do."""
    rows = read_split(dataset_dir, split)
    return pair_accuracy(rows, [np.array([len(text) for text in row["responses"]]) for row in rows])


CONTROLS: dict[str, Callable[[str | Path, str], PairAccuracy]] = {"longer_response": longer_response_accuracy}
