"""What a failed worker group tells the user: a GazermError a worker raised, or a kill for memory with
the settings that would fit, as one line (the CLI prints it and exits 2)."""

from __future__ import annotations

from ray.exceptions import ActorDiedError, OutOfMemoryError

from gazerm.errors import ConfigError
from gazerm.train.job import user_error
from gazerm.train.memory import MemoryCheck


class WorkerGroupFailure(Exception):
    """Stands in for Ray Train's WorkerGroupError: the failures by world rank."""

    def __init__(self, *failures: BaseException) -> None:
        super().__init__("worker group failed")
        self.worker_failures = dict(enumerate(failures))


MEMORY = MemoryCheck(None, None, lambda: "a training worker ran out of memory: does not fit: ...")


def test_a_worker_killed_for_memory_gets_the_memory_policys_line():
    killed = OutOfMemoryError("Task was killed due to the node running low on memory.")
    cause = user_error(WorkerGroupFailure(RuntimeError("peer lost"), killed), MEMORY)
    assert isinstance(cause, ConfigError) and str(cause) == MEMORY.if_killed()


def test_an_actor_death_the_memory_monitor_explains_counts_as_out_of_memory():
    died = ActorDiedError()
    died.error_msg = "The actor died unexpectedly. Task was killed due to the node running low on memory."
    assert isinstance(user_error(WorkerGroupFailure(died), MEMORY), ConfigError)


def test_a_gazerm_error_from_a_worker_comes_first_and_other_failures_stay_bugs():
    config_error = ConfigError("lora targets missing")
    wrapped = RuntimeError("in worker")
    wrapped.__cause__ = config_error
    assert user_error(WorkerGroupFailure(OutOfMemoryError("oom"), wrapped), MEMORY) is config_error
    assert user_error(WorkerGroupFailure(RuntimeError("segfault")), MEMORY) is None
