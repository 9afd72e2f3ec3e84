"""One trial of a search: the ordinary training job with the trial's sampled values, reporting to Tune."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gazerm.config import with_overrides
from gazerm.train.config import TrainJobConfig

TRIALS_DIR = "trials"


def trial_config(
    base: TrainJobConfig,
    fixed: Mapping[str, Any],
    sampled: Mapping[str, Any],
    trial_dir: str,
    run_name: str,
) -> TrainJobConfig:
    """The job a trial trains: base config, the space's fixed overrides, then the sampled values.

    Raises ConfigError naming the field when a value does not fit the config (e.g. a LoRA rank of 0).
    """
    overrides = {**fixed, **sampled, "output_dir": trial_dir, "tracking.run_name": run_name}
    return with_overrides(base, overrides)


def run_trial(
    sampled: dict[str, Any], base: TrainJobConfig, fixed: dict[str, Any], search_dir: str, parent_run_id: str
) -> None:
    """Tune's function trainable. Train's reports reach Tune through ``TuneReportCallback``; the
    trial's MLflow run nests under the search's parent run and gets the trial's exported model."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from gazerm.train.job import run_training

    trial_id = tune.get_context().get_trial_id()
    trial_dir = str(Path(search_dir) / TRIALS_DIR / trial_id)
    config = trial_config(base, fixed, sampled, trial_dir, f"{Path(search_dir).name}-{trial_id}")
    run_training(config, callbacks=[TuneReportCallback()], parent_run_id=parent_run_id)
