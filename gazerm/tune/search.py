"""``gazerm tune``: the driver side of a hyper-parameter search.

It prepares the data once, opens the search's MLflow parent run, runs Ray Tune over the training
job (one TorchTrainer per trial, see ``gazerm.tune.trial``), then chooses: the best finished trial's
model is registered with an alias, and the comparison and feature-ablation tables are written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gazerm.config import dump_config, with_overrides
from gazerm.errors import ConfigError, ExistsError, GazermError
from gazerm.runtime import DATA_CPUS
from gazerm.storage import is_object_store
from gazerm.table import Table
from gazerm.train.config import RunConfig, TrainJobConfig
from gazerm.train.metric_names import overall_metrics
from gazerm.tune.ablation import ablation_table
from gazerm.tune.results import TrialRecord, best_trial, comparison_table
from gazerm.tune.space import SearchSpace
from gazerm.tune.trial import run_trial, trial_config

TUNE_DIR = "tune"
# A trial only drives its TorchTrainer (whose workers hold the real resources). Tune's default of a
# whole CPU would take one from Ray Data, and Ray rejects an all-zero request: a token share it is.
TRIAL_DRIVER_CPUS = 0.01


@dataclass
class SearchOutcome:
    """What ``gazerm tune`` prints; everything in it is also in MLflow, where ``gazerm select`` reads it."""

    name: str
    search_dir: str
    tracking_uri: str
    parent_run_id: str
    trials: list[TrialRecord]
    best: TrialRecord
    model_version: Any
    comparison: Table
    ablation: Table


def search_name(config: TrainJobConfig, space: SearchSpace) -> str:
    """``quickstart-tiny``: names the search directory, the MLflow parent run and (by default) the model."""
    return f"{config.name}-{space.name}"


def derive_concurrency(run: RunConfig, cluster: Mapping[str, float]) -> int:
    """How many trials fit side by side: GPUs (or the CPUs Ray Data does not need) over one trial's share."""
    if run.use_gpu:
        available, per_trial = cluster.get("GPU", 0.0), run.num_workers
    else:
        available, per_trial = cluster.get("CPU", 0.0) - DATA_CPUS, run.num_workers * run.cpus_per_worker
    return max(1, int(available // per_trial))


def run_search(config: TrainJobConfig, space: SearchSpace, fresh: bool = False) -> SearchOutcome:
    """Run the search ``space`` over the job ``config``. ``fresh`` deletes an earlier search's directory
    (otherwise refused, so finished trials are never overwritten by accident); its MLflow runs stay."""
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from gazerm.runtime import init_ray
    from gazerm.track.mlflow_tracking import start_run
    from gazerm.train.job import ensure_dataset
    from gazerm.tune.scheduler import asha

    if is_object_store(config.output_dir):
        raise ConfigError(
            f"output_dir {config.output_dir}: a search needs a local or mounted path (trials run there)"
        )
    if config.model.frozen:
        raise ConfigError(
            "model.frozen trains in this process, outside Ray Tune's trials (they would report nothing to "
            "the search): compare frozen-backbone settings as rows of gazerm reproduce instead"
        )
    if not os.environ.get("RAY_ADDRESS"):
        check_memory(config, space)
    name = search_name(config, space)
    search_dir = Path(config.output_dir).resolve().parent / name
    if search_dir.exists():
        if not fresh:
            raise ExistsError(f"{search_dir} exists: pass --fresh to replace that search")
        shutil.rmtree(search_dir)
    init_ray(config.run.num_workers * config.run.cpus_per_worker)
    dataset_dir, manifest = ensure_dataset(config)
    tracking_uri = config.resolved_tracking_uri()
    prepared = {"data.dataset_dir": str(Path(dataset_dir).resolve()), "data.prepare": None}
    # trials live deeper: keep them in the same store
    base = with_overrides(config, {**prepared, "tracking.tracking_uri": tracking_uri})
    check_values(base, space.fixed, space, manifest.gaze_predictor)

    parent_run_id = start_run(
        tracking_uri, config.tracking.experiment, name, {"search": space.model_dump(mode="json")}, None
    )
    _log_text(
        tracking_uri,
        parent_run_id,
        {"search_space.yaml": dump_config(space), "job.yaml": dump_config(config)},
    )
    concurrency = space.max_concurrent_trials or derive_concurrency(config.run, ray.cluster_resources())
    trainable = tune.with_parameters(
        run_trial, base=base, fixed=space.fixed, search_dir=str(search_dir), parent_run_id=parent_run_id
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"CPU": TRIAL_DRIVER_CPUS}),
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            num_samples=space.num_samples,
            scheduler=asha(space.asha) if space.asha else None,
            # Seeded, so its concurrency cap goes here: Tune ignores max_concurrent_trials beside it.
            search_alg=BasicVariantGenerator(random_state=space.seed, max_concurrent=concurrency),
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(search_dir), verbose=1),
    )
    print(f"[gazerm] search {name}: up to {concurrency} trial(s) at a time, MLflow run {parent_run_id}")
    tuner.fit()
    return _choose(name, search_dir, tracking_uri, parent_run_id, space)


def check_values(base: TrainJobConfig, fixed: Mapping[str, Any], space: SearchSpace, predictor: str) -> None:
    """Fail before any trial starts when a listed value (or a range end) does not fit the config or the
    data's gaze (a feature subset the ``predictor`` leaves at 0, e.g. all but TRT with fmv1), or when ASHA
    would stop every trial at ``max_t`` before the job's last step (and model export)."""
    steps = trial_config(base, fixed, {}, "check", "check").run.max_steps
    if space.asha and steps and space.asha.max_t < steps:
        raise ConfigError(
            f"asha.max_t ({space.asha.max_t}) is below run.max_steps ({steps}): no trial would finish"
        )
    for path, distribution in space.distributions().items():
        for value in distribution.values_to_check():
            problem = trial_config(base, fixed, {path: value}, "check", "check").features_problem(predictor)
            if problem:
                raise ConfigError(f"the search tries {path}={value}, but {problem}")


def check_memory(config: TrainJobConfig, space: SearchSpace) -> None:
    """On a local Ray (the trials' workers share this machine), the job with each listed value and range
    end against this machine's memory, as ``gazerm train`` checks a job: a trial cannot check its own, since
    its process runs inside Ray and does not know where its workers will run."""
    from gazerm.train.memory import preflight

    tried = [{}] + [
        {path: value} for path, values in space.distributions().items() for value in values.values_to_check()
    ]
    for sampled in tried:
        refusal = preflight(trial_config(config, space.fixed, sampled, "check", "check"), local=True).refusal
        if refusal:
            where = ", ".join(f"{path}={value}" for path, value in sampled.items()) or "its fixed settings"
            raise ConfigError(f"the search tries {where}, but {refusal}")


def _choose(
    name: str, search_dir: Path, tracking_uri: str, parent_run_id: str, space: SearchSpace
) -> SearchOutcome:
    """After the trials: close what Tune stopped, register the best model, write the tables."""
    from mlflow.tracking import MlflowClient

    from gazerm.track.mlflow_tracking import child_runs, finish_run
    from gazerm.track.registry import REGISTERED_TAG, register_run_model

    client = MlflowClient(tracking_uri)
    for run in child_runs(tracking_uri, parent_run_id):
        if run.info.status == "RUNNING":  # stopped early by ASHA, or failed: no model was exported
            client.set_terminated(run.info.run_id, status="KILLED")
    trials = [TrialRecord.from_run(run) for run in child_runs(tracking_uri, parent_run_id)]
    best = best_trial(trials, space.metric, space.mode)
    if best is None:
        client.set_terminated(parent_run_id, status="FAILED")
        raise GazermError(f"no trial of {name} finished; see the trial errors under {search_dir / TUNE_DIR}")
    summary = overall_metrics(best.metrics, "val/")
    version = register_run_model(
        tracking_uri, space.registered_model or name, best.run_id, summary, space.alias
    )
    comparison = comparison_table(trials, space.metric, space.mode)
    ablation = ablation_table(trials, space.metric, space.mode)
    _log_text(
        tracking_uri,
        parent_run_id,
        {
            "trials.md": comparison.markdown(),
            "ablation.md": ablation.markdown(),
            "ablation.csv": ablation.csv(),
        },
    )
    for key, value in summary.items():
        client.log_metric(parent_run_id, key, value)
    client.set_tag(parent_run_id, "gazerm.best_run", best.run_id)
    client.set_tag(parent_run_id, REGISTERED_TAG, f"{version.name}/{version.version}")
    finish_run(tracking_uri, parent_run_id, None, {"best_run": best.run_id, "metrics": summary})
    return SearchOutcome(
        name, str(search_dir), tracking_uri, parent_run_id, trials, best, version, comparison, ablation
    )


def _log_text(tracking_uri: str, run_id: str, files: Mapping[str, str]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for file_name, text in files.items():
        client.log_text(run_id, text, file_name)
