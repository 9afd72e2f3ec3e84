"""``gazerm train``: the driver side of a training job.

It makes sure the Parquet shards exist (running ``prepare`` when the config says so), starts or
joins Ray, opens the MLflow run, lists the train split's blocks for the workers' seeded data order
(``train.order``), hands the validation split to a ``TorchTrainer`` through the object store and,
when the workers finish, publishes the exported model beside the run and in MLflow.
The same function runs locally and under ``ray job submit`` (``ray.init()`` joins the cluster); under
``run.launcher: local`` it starts no Ray and hands the ranks to ``train.local_launch`` instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gazerm.data.shards import Manifest, verify
from gazerm.errors import ConfigError
from gazerm.model.backbones import check_attention, resolve_backbone
from gazerm.model.inputs import InputSpec
from gazerm.model.manifest import MANIFEST_FILE, verify_model_dir
from gazerm.runtime import init_ray
from gazerm.storage import Storage
from gazerm.train.checkpoints import MODEL_DIR, RAY_RUN_NAME, STATE_FILE, latest_checkpoint
from gazerm.train.collate import Windows
from gazerm.train.config import QUICKSTART_DATA, TrainJobConfig
from gazerm.train.failures import StopOnGazermError, user_error
from gazerm.train.kinds import LossSpec
from gazerm.train.local_launch import LocalLauncher, job_launcher
from gazerm.train.memory import preflight
from gazerm.train.metric_names import summarize_test
from gazerm.train.metrics import StartupClock
from gazerm.train.order import EpochPlan, as_recorded_now, list_blocks
from gazerm.train.progress import follow
from gazerm.train.units import ToUnits
from gazerm.train.worker_entry import SELECT_RANK, LoopSettings, checkpoint_score, train_loop_per_worker

log = logging.getLogger(__name__)

EVALUATED = ("validation", "test")  # the splits every rank scores whole


@dataclass
class TrainOutcome:
    model_dir: str
    tracking_uri: str
    run_id: str
    metrics: dict[str, float]


def ensure_dataset(config: TrainJobConfig) -> tuple[str, Manifest]:
    """The prepared dataset directory and its verified manifest; prepares it first when configured."""
    data = config.data
    if data.dataset_dir:
        return data.dataset_dir, verify(data.dataset_dir)
    from gazerm.data.prepare import prepare

    first = data.prepare.sources[0]
    if first.path == QUICKSTART_DATA and not Path(QUICKSTART_DATA).exists():
        from gazerm.data.synthetic import write_readability_preferences

        write_readability_preferences(QUICKSTART_DATA, data.synthetic_rows, seed=config.run.seed)
        log.info("wrote %d synthetic preference pairs to %s", data.synthetic_rows, QUICKSTART_DATA)
    return data.prepare.output_dir, prepare(data.prepare)


def check_prompt_gaze(config: TrainJobConfig, root: str, manifest: Manifest) -> None:
    """The reference gaze layout reads the prompt's gaze, which scoring predicts; shards with predicted gaze
    written before ``prepare`` stored the prompt's would train the model without it. Refused, not guessed."""
    if not config.model.gazes_prompt or manifest.gaze_source is None:
        return
    paths = manifest.shard_paths(root, "train")
    if paths and "prompt_gaze" not in pq.read_schema(paths[0]).names:
        raise ConfigError(
            f"model.gaze_layout=reference gazes the prompt too, but {root} was prepared before gazerm stored "
            "the prompt's gaze: prepare it again (gazerm prepare CONFIG --force)"
        )


def fitted_to_data(config: TrainJobConfig, root: str, manifest: Manifest) -> TrainJobConfig:
    """The job checked against its prepared data, with what the data decides filled in: the implicit
    head's input length (the manifest names the features)."""
    problem = config.features_problem(manifest.gaze_predictor)
    if problem:
        raise ConfigError(f"{root}: {problem}")
    check_prompt_gaze(config, root, manifest)
    names = (manifest.implicit or {}).get("feature_names")
    if not config.model.implicit_features or not names:
        return config
    if config.model.implicit_dim not in (None, len(names)):
        raise ConfigError(
            f"{root}: model.implicit_dim={config.model.implicit_dim}, but the data has {len(names)} implicit "
            f"features ({', '.join(names)})"
        )
    model = config.model.model_copy(update={"implicit_dim": len(names)})
    return config.model_copy(update={"model": model})


def input_spec(config: TrainJobConfig, manifest: Manifest) -> InputSpec:
    """How the job's model reads its inputs, saved with it so scoring builds the same: the gaze its data
    was prepared with, the token budget and the template."""
    return InputSpec(
        manifest.config.get("gaze", {"predictor": "none"}), config.data.max_length, config.data.template
    )


def run_frozen_training(config: TrainJobConfig, resume: bool, parent_run_id: str | None) -> TrainOutcome:
    """A ``model.frozen`` job: the heads trained in this process on cached pooled features
    (``gazerm.train.frozen``), tracked and published like a Ray Train job's model."""
    from gazerm.track.mlflow_tracking import MetricLogger, ended_on_failure, start_run
    from gazerm.train.frozen import FrozenTrainer

    output = Storage.of(config.output_dir)
    if not resume:
        output.delete()
    root, manifest = ensure_dataset(config)
    config = fitted_to_data(config, root, manifest)
    loss = LossSpec.of(config)
    splits = {name: _split_units(manifest.shard_paths(root, name), loss) for name in ("train", *EVALUATED)}
    for split in ("train", "validation"):
        if splits[split].num_rows == 0:
            raise ConfigError(
                f"{root}: the {split} split has no {config.loss.kind} training units (loss.kind)"
            )
    tracking_uri = config.resolved_tracking_uri()
    run_id = start_run(
        tracking_uri,
        config.tracking.experiment,
        config.tracking.run_name or config.name,
        {**config.model_dump(mode="json"), "train_units": splits["train"].num_rows},
        output.uri,
        parent_run_id=parent_run_id,
    )
    print(
        f"[gazerm] training the heads of {config.name} on a frozen backbone: {splits['train'].num_rows} "
        "train units",
        flush=True,
    )
    with ended_on_failure(tracking_uri, run_id):
        trainer = FrozenTrainer(config, splits, input_spec(config, manifest), loss)
        trainer.setup()
        metrics = trainer.train(MetricLogger(tracking_uri, run_id).log)
        print(f"[gazerm] {summarize_test(metrics, config.run)}", flush=True)
        return _publish_model(trainer.save, metrics, output, tracking_uri, run_id)


def planned_steps(plan: EpochPlan, config: TrainJobConfig) -> int:
    """Optimizer steps of the run: ``run.max_steps``, or what ``run.epochs`` epochs give.

    Every rank trains as many micro-batches an epoch (equal split) as its share of units fills.
    DeepSpeed's accumulation carries over epoch ends, so steps are counted over all epochs'
    micro-batches together.
    """
    run = config.run
    micro_batches = Windows.of(config).micro_batches(plan.units_per_rank)
    if micro_batches == 0:
        return 0  # every rank's share is empty, whatever max_steps says
    return run.max_steps or micro_batches * run.epochs // run.grad_accum


def check_same_layout(checkpoint: str, layout: dict[str, Any]) -> None:
    """A resume trains on exactly the units an uninterrupted run would only under the data layout the
    checkpoint was trained with (``EpochPlan.layout``: seed, workers, batch geometry, the split's blocks)."""
    saved = json.loads(Storage.of(checkpoint).child(STATE_FILE).read_text()).get("layout")
    if not saved:
        return  # a checkpoint from before layouts were recorded: taken on trust
    saved = as_recorded_now(saved)
    changed = [
        f"{k}: {saved.get(k, '(not recorded)')} then, {v} now" for k, v in layout.items() if saved.get(k) != v
    ]
    if changed:
        raise ConfigError(
            f"resuming from {checkpoint}: the training data order changed ({'; '.join(changed)}); rerun "
            "with the original settings, or pass --fresh to start over"
        )


def run_training(
    config: TrainJobConfig,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
    parent_run_id: str | None = None,
    launcher: LocalLauncher | None = None,
) -> TrainOutcome:
    """Train one job end to end. A search runs each trial through here too: ``callbacks`` join the
    trainer's (Tune's report bridge) and ``parent_run_id`` nests the job's MLflow run under the search's.
    ``launcher``: the job's local launcher, entered by the caller before it imported this module
    (``job_launcher``); else a local job's is entered here.
    """
    if config.model.frozen:
        return run_frozen_training(config, resume, parent_run_id)
    startup = StartupClock(time.time())
    if not config.model.is_tiny:
        resolve_backbone(config.model.backbone)  # a missing package or file stops here, not in every worker
    check_attention(config.model.attn_implementation)
    local = config.run.launcher == "local"
    if local and callbacks:
        raise ConfigError(
            "run.launcher: local runs one job's ranks on this machine; a search's trials run under Ray Train "
            "(run.launcher: ray)"
        )
    owned = None if launcher else job_launcher(config)  # a caller's launcher is entered already
    with owned or nullcontext():
        return _run_started(config, resume, callbacks, parent_run_id, startup, launcher or owned)


def _run_started(
    config: TrainJobConfig,
    resume: bool,
    callbacks: Sequence[Any],
    parent_run_id: str | None,
    startup: StartupClock,
    launcher: LocalLauncher | None,
) -> TrainOutcome:
    """:func:`run_training` once its launcher is starting: the local launcher's agent (``launcher``)
    imports what the ranks need meanwhile; under Ray Train (None), Ray starts here."""
    import ray.train

    from gazerm.track.mlflow_tracking import ended_on_failure, open_store, start_run

    local = launcher is not None
    memory = preflight(config, local=local or not os.environ.get("RAY_ADDRESS"))  # workers on this machine?
    if memory.refusal:
        raise ConfigError(memory.refusal)
    if memory.warning:
        log.warning(memory.warning)
    output = Storage.of(config.output_dir)
    if not resume:
        output.delete()
    tracking_uri = config.resolved_tracking_uri()
    background = ThreadPoolExecutor(max_workers=1)
    store = background.submit(open_store, tracking_uri)  # while Ray starts
    background.shutdown(wait=False)
    if not local:
        init_ray(config.run.num_workers * config.run.cpus_per_worker)
        startup.mark("ray")
    root, manifest = ensure_dataset(config)
    config = fitted_to_data(config, root, manifest)
    loss = LossSpec.of(config)
    train_paths = [str(Path(p).resolve()) for p in manifest.shard_paths(root, "train")]
    splits = {name: _split_units(manifest.shard_paths(root, name), loss) for name in EVALUATED}
    blocks = list_blocks(train_paths, loss)
    units = {"train": sum(block.units for block in blocks), "validation": splits["validation"].num_rows}
    for split, count in units.items():
        if count == 0:
            raise ConfigError(
                f"{root}: the {split} split has no {config.loss.kind} training units (loss.kind)"
            )
    train_units = units["train"]
    plan = EpochPlan.of(blocks, config)
    startup.mark("data")
    total_steps = planned_steps(plan, config)
    if total_steps == 0:
        raise ConfigError(
            f"{train_units} training units are too few for one step of this batch configuration"
        )

    resume_from = latest_checkpoint(output) if resume else None
    if resume_from:
        check_same_layout(resume_from, plan.layout(Windows.of(config)))  # before the MLflow run is reopened
    store.result()  # raises what opening the store raised
    run_id = start_run(
        tracking_uri,
        config.tracking.experiment,
        config.tracking.run_name or config.name,
        {**config.model_dump(mode="json"), "train_units": train_units, "total_steps": total_steps},
        output.uri,
        parent_run_id=parent_run_id,
    )
    startup.mark("tracking")
    if resume_from:
        print(f"[gazerm] resuming from {resume_from}", flush=True)
    settings = LoopSettings(
        total_steps,
        tracking_uri,
        run_id,
        plan.to_dict(),
        input_spec(config, manifest),
        loss,
        resume_from,
        asdict(startup),
    )
    print(
        f"[gazerm] training {config.name}: {train_units} train units, {total_steps} steps on "
        f"{config.run.num_workers} workers (ZeRO-{config.run.zero_stage})",
        flush=True,
    )
    with ended_on_failure(tracking_uri, run_id):
        with follow(total_steps, local=local) as board:
            loop_config = {
                "job": config.model_dump(mode="json"),
                "settings": settings,  # typed: pickled for the workers
                "board": board,
                # The splits are small: the workers get the tables (under Ray, through the object store;
                # a Ray Dataset would cost every worker a streaming executor's start-up for no gain).
                "splits": splits if local else {name: ray.put(units) for name, units in splits.items()},
            }
            if local:
                final = launcher.run(loop_config, memory.if_killed)
                checkpoint, metrics = ray.train.Checkpoint(final["checkpoint"]), final["metrics"]
            else:
                try:
                    result = _torch_trainer(config, loop_config, output, callbacks).fit()
                except (ray.train.WorkerGroupError, ray.train.ControllerError) as error:
                    cause = user_error(error, memory.if_killed)
                    if cause is None:
                        raise
                    raise cause from error
                checkpoint, metrics = result.checkpoint, result.metrics or {}
        return _publish(checkpoint, metrics, output, tracking_uri, run_id)


def _publish(
    checkpoint: Any, metrics: dict[str, Any], output: Storage, tracking_uri: str, run_id: str
) -> TrainOutcome:
    """The final ``checkpoint``'s model to ``output_dir/model`` and the MLflow run, which is then closed."""

    def copy_from_checkpoint(local_model: Path) -> None:
        with checkpoint.as_directory() as checkpoint_dir:
            shutil.copytree(Path(checkpoint_dir) / MODEL_DIR, local_model)

    return _publish_model(copy_from_checkpoint, _final_metrics(metrics), output, tracking_uri, run_id)


def _publish_model(
    write_model: Callable[[Path], None],
    metrics: dict[str, float],
    output: Storage,
    tracking_uri: str,
    run_id: str,
) -> TrainOutcome:
    """The model ``write_model`` writes into a local staging directory, published to ``output_dir/model``
    (its manifest last) and attached to the MLflow run, which is then closed."""
    from gazerm.track.mlflow_tracking import finish_run

    model = output.child(MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="gazerm-model-") as staging:
        local_model = Path(staging) / MODEL_DIR
        write_model(local_model)
        verify_model_dir(local_model)  # a model that does not match its manifest is not published
        model.replace_with(local_model, commit_file=MANIFEST_FILE)
        finish_run(tracking_uri, run_id, str(local_model), {"metrics": metrics, "model_dir": model.uri})
    return TrainOutcome(model.uri, tracking_uri, run_id, metrics)


def _torch_trainer(
    config: TrainJobConfig, loop_config: dict[str, Any], output: Storage, callbacks: Sequence[Any]
):
    """The Ray Train job: ``num_workers`` ranks running ``train_loop_per_worker``, checkpoints under
    ``output_dir/ray``. Every rank reads the validation and test units whole (in the same order: each rank
    scores every world_size-th micro-batch of them, see ``Trainer.evaluate``). The train split is not
    handed over at all: each rank reads its seeded share itself (``train.order``). With ``run.select:
    best`` Ray keeps the checkpoints of the evaluations that were the best when they ran, by
    ``run.select_metric`` and ``run.select_ties`` (the loop's ``SELECT_RANK``), the latest best first, and
    always the latest checkpoint, to resume from.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.run.num_workers,
            use_gpu=config.run.use_gpu,
            resources_per_worker={"CPU": config.run.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend="nccl" if config.run.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=RAY_RUN_NAME,
            storage_path=output.uri,
            checkpoint_config=_checkpoint_config(config),
            # A lost worker or node restarts the worker group (on the nodes left or joining), which
            # continues from the latest checkpoint in the same data order and MLflow run.
            failure_config=ray.train.FailureConfig(max_failures=config.run.max_failures),
            callbacks=[StopOnGazermError(), *callbacks],
        ),
    )


def _checkpoint_config(config: TrainJobConfig):
    import ray.train

    run = config.run
    score = checkpoint_score(run.select)
    if score is None:
        return ray.train.CheckpointConfig(num_to_keep=run.keep_checkpoints)
    return ray.train.CheckpointConfig(
        num_to_keep=run.keep_checkpoints, checkpoint_score_attribute=score, checkpoint_score_order="max"
    )


def _split_units(paths: list[str], loss: LossSpec) -> pa.Table:
    """An evaluated split's units, built here once: every rank reads all of it, and for a split this
    small a Ray Data pipeline spends more starting its tasks than doing the work."""
    to_units = ToUnits(loss)
    if not paths:
        return to_units.schema.empty_table()
    return to_units(pa.concat_tables([pq.read_table(path) for path in paths]))


def _final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The final report's numbers, less the rank Ray kept checkpoints by (no metric of the model's)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != SELECT_RANK}
