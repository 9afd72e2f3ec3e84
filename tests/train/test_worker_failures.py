"""What a failed worker group tells the user: a GazermError a worker raised, or a kill for memory with
the settings that would fit, as one line (the CLI prints it and exits 2)."""

from __future__ import annotations

from ray.exceptions import ActorDiedError, OutOfMemoryError

from gazerm.errors import ConfigError
from gazerm.model.config import ModelConfig
from gazerm.train.config import RunConfig, TrainJobConfig
from gazerm.train.job import user_error


class WorkerGroupFailure(Exception):
    """Stands in for Ray Train's WorkerGroupError: the failures by world rank."""

    def __init__(self, *failures: BaseException) -> None:
        super().__init__("worker group failed")
        self.worker_failures = dict(enumerate(failures))


CONFIG = TrainJobConfig(model=ModelConfig(fusion="concat"), run=RunConfig(micro_batch_size=8, grad_accum=2))


def test_a_worker_killed_for_memory_names_the_cause_and_settings_that_fit():
    killed = OutOfMemoryError("Task was killed due to the node running low on memory.")
    cause = user_error(WorkerGroupFailure(RuntimeError("peer lost"), killed), CONFIG)
    assert isinstance(cause, ConfigError)
    assert str(cause) == (
        "a training worker ran out of memory (micro-batches of 8 units, sequences up to 128 tokens plus as "
        "many gaze slots); try --set run.micro_batch_size=4 --set run.grad_accum=4 (the same batch), "
        "--set model.gradient_checkpointing=true, --set run.zero_stage=3, or more memory per worker"
    )


def test_an_actor_death_the_memory_monitor_explains_counts_as_out_of_memory():
    died = ActorDiedError()
    died.error_msg = "The actor died unexpectedly. Task was killed due to the node running low on memory."
    assert isinstance(user_error(WorkerGroupFailure(died), CONFIG), ConfigError)


def test_a_gazerm_error_from_a_worker_comes_first_and_other_failures_stay_bugs():
    config_error = ConfigError("lora targets missing")
    wrapped = RuntimeError("in worker")
    wrapped.__cause__ = config_error
    assert user_error(WorkerGroupFailure(OutOfMemoryError("oom"), wrapped), CONFIG) is config_error
    assert user_error(WorkerGroupFailure(RuntimeError("segfault")), CONFIG) is None
