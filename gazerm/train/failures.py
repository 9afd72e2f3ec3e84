"""What a failed worker group means: a mistake the user can fix, said in one line, or a crash.

A :class:`GazermError` a worker raises (a chat template the tokenizer lacks, LoRA targets the backbone
lacks, a bad row in a shard) is the same on every attempt, so :class:`StopOnGazermError` ends the run at
the first one instead of letting Ray Train restart the worker group ``run.max_failures`` times (each
restart loads the model again: minutes on an 8B backbone). A worker killed for memory is reported with
the memory policy's line. Anything else is a crash, restarted from the latest checkpoint as configured.

Imports only Ray and gazerm's errors: the callback is unpickled in Ray Train's controller process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ray.exceptions import OutOfMemoryError
from ray.train import UserCallback

from gazerm.errors import ConfigError, GazermError

_MEMORY_KILL = ("out of memory", "low on memory", "memory monitor")  # how Ray words such deaths


def _as_raised(failure: BaseException) -> tuple[BaseException | None, ...]:
    """A worker's failure and what Ray wrapped in it (``cause``, ``__cause__``)."""
    return failure, getattr(failure, "cause", None), failure.__cause__


def gazerm_error_in(failures: Iterable[BaseException]) -> GazermError | None:
    """The first :class:`GazermError` among the workers' failures (raised as is, or as the cause Ray
    wrapped)."""
    for failure in failures:
        for candidate in _as_raised(failure):
            if isinstance(candidate, GazermError):
                return candidate
    return None


def user_error(error: Exception, if_killed: Callable[[], str]) -> GazermError | None:
    """What the user can fix in a failed run, as one line like any other error rather than Ray's wrapped
    traceback: the GazermError :class:`StopOnGazermError` stopped the run with, or one a worker raised on
    its last attempt, or a worker killed for running out of memory (``if_killed()``: the memory policy's
    line, worked out only now). None for anything else (a bug keeps its traceback)."""
    stopped = getattr(error, "controller_failure", None)  # ControllerError: a callback stopped the run
    if isinstance(stopped, GazermError):
        return stopped
    failures = list(getattr(error, "worker_failures", {}).values())
    found = gazerm_error_in(failures)
    if found is not None:
        return found
    if any(_out_of_memory(failure) for failure in failures):
        return ConfigError(if_killed())
    return None


def _out_of_memory(failure: BaseException) -> bool:
    """Ray's memory monitor killed the worker (an ``OutOfMemoryError``, or an actor death it explains)."""
    text = str(failure).lower()
    return any(isinstance(cause, OutOfMemoryError) for cause in _as_raised(failure)) or any(
        p in text for p in _MEMORY_KILL
    )


class StopOnGazermError(UserCallback):
    """Ends the run at a worker's :class:`GazermError` (see the module doc). Raising from this hook is how:
    Ray Train's controller treats an error in a callback as its own, which it does not retry, and
    ``fit()`` raises it as a ``ControllerError`` whose ``controller_failure`` is this error."""

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        error = gazerm_error_in(worker_exceptions.values())
        if error is not None:
            raise error
