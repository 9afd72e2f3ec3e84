"""What a failed worker group tells the user: a GazermError a worker raised, or a kill for memory with
the settings that would fit, as one line (the CLI prints it and exits 2); and a worker's GazermError ends
the run instead of restarting the worker group."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError, OutOfMemoryError

from gazerm.errors import ConfigError
from gazerm.train.failures import StopOnGazermError, user_error


class WorkerGroupFailure(Exception):
    """Stands in for Ray Train's WorkerGroupError: the failures by world rank."""

    def __init__(self, *failures: BaseException) -> None:
        super().__init__("worker group failed")
        self.worker_failures = dict(enumerate(failures))


KILLED_LINE = "a training worker ran out of memory: does not fit: ..."


def if_killed() -> str:  # the memory policy's line for a kill
    return KILLED_LINE


def test_a_worker_killed_for_memory_gets_the_memory_policys_line():
    killed = OutOfMemoryError("Task was killed due to the node running low on memory.")
    cause = user_error(WorkerGroupFailure(RuntimeError("peer lost"), killed), if_killed)
    assert isinstance(cause, ConfigError) and str(cause) == KILLED_LINE


def test_an_actor_death_the_memory_monitor_explains_counts_as_out_of_memory():
    died = ActorDiedError()
    died.error_msg = "The actor died unexpectedly. Task was killed due to the node running low on memory."
    assert isinstance(user_error(WorkerGroupFailure(died), if_killed), ConfigError)


def test_a_gazerm_error_from_a_worker_comes_first_and_other_failures_stay_bugs():
    config_error = ConfigError("lora targets missing")
    wrapped = RuntimeError("in worker")
    wrapped.__cause__ = config_error
    assert user_error(WorkerGroupFailure(OutOfMemoryError("oom"), wrapped), if_killed) is config_error
    assert user_error(WorkerGroupFailure(RuntimeError("segfault")), if_killed) is None


class ControllerFailure(Exception):
    """Stands in for Ray Train's ControllerError: what the controller itself failed with."""

    def __init__(self, failure: BaseException) -> None:
        super().__init__("controller failed")
        self.controller_failure = failure


def test_a_workers_gazerm_error_stops_the_run_and_a_crash_does_not():
    config_error = ConfigError("data.template=chat: tokenizer has no chat template")
    wrapped = RuntimeError("in worker")
    wrapped.__cause__ = config_error
    stop = StopOnGazermError()
    with pytest.raises(ConfigError) as stopped:
        stop.after_exception(None, {0: RuntimeError("peer lost"), 1: wrapped})
    assert stopped.value is config_error
    stop.after_exception(None, {0: RuntimeError("segfault")})  # restarted as FailureConfig says
    # what fit() then raises comes back to the user as the worker's one line
    assert user_error(ControllerFailure(config_error), if_killed) is config_error
    assert user_error(ControllerFailure(RuntimeError("controller bug")), if_killed) is None
