"""Starting or joining Ray, the same way for every gazerm command."""

from __future__ import annotations

import logging
import math
import os
import socket
import warnings

GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"  # read by Ray when it starts a local head node
VERBOSE_ENV = "GAZERM_VERBOSE"  # "1": show the workers' and the libraries' own output (``gazerm -v``)

# Logical CPUs a local Ray keeps beyond the training workers' (and a search keeps out of its trials'):
# Ray Data's read and map tasks need their own, or they wait forever for a free CPU.
DATA_CPUS = 2


def free_port() -> int:
    """A TCP port no process listens on now (on any interface), for a server about to start."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


class _ConsoleFormat(logging.Formatter):
    """gazerm's records as ``[gazerm] message`` (the level named where it is not INFO), the libraries'
    as ``LEVEL logger: message``."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not record.name.startswith("gazerm"):
            return super().format(record)
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"[gazerm] {level}{record.getMessage()}"


def configure_logging(verbose_output: bool) -> None:
    """gazerm's own messages from INFO up; the libraries' (Ray, MLflow's database migrations, …) only
    from WARNING up, unless ``verbose_output`` shows everything from DEBUG up. Recorded in the
    environment for :func:`init_ray`."""
    os.environ[VERBOSE_ENV] = "1" if verbose_output else "0"
    if not verbose_output:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets up its own INFO handler
    handler = logging.StreamHandler()
    handler.setFormatter(_ConsoleFormat())
    logging.basicConfig(level=logging.DEBUG if verbose_output else logging.WARNING, handlers=[handler])
    logging.getLogger("gazerm").setLevel(logging.DEBUG if verbose_output else logging.INFO)


def quiet_ray_data() -> None:
    """Ray Data's live progress bars turn into megabytes of log lines in job logs and CI, and its
    executor narrates every dataset at INFO; gazerm prints its own progress."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    if not verbose():
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # "progress bars disabled" included


def init_ray(reserved_cpus: float = 0) -> None:
    """Join the cluster (``RAY_ADDRESS``, ``ray job submit``) or start a local Ray.

    A local Ray gets at least :data:`DATA_CPUS` logical CPUs beyond what the training workers reserve.
    The workers' output (DeepSpeed, transformers, Ray's own) reaches this console only when
    :func:`verbose`: training progress comes through ``train.progress`` instead.
    """
    import ray
    from ray.util.annotations import RayDeprecationWarning

    # Train V2's print patch would route the workers' prints (DeepSpeed's, …) to this console.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    quiet_ray_data()
    if not verbose():  # Ray warns about its own internal calls (Ray Train's ingest options)
        warnings.filterwarnings("ignore", category=RayDeprecationWarning)
    if ray.is_initialized():
        return
    quiet = {"logging_level": logging.INFO if verbose() else logging.ERROR, "log_to_driver": verbose()}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        num_cpus = max(os.cpu_count() or 1, math.ceil(reserved_cpus) + DATA_CPUS)
        _start_local(num_cpus, quiet)


def _start_local(num_cpus: int, options: dict[str, object]) -> None:
    """A local Ray whose processes are told its address (and whether output is verbose). With two jobs'
    local instances on one host, Ray's own helpers that look "the" cluster up from inside (Ray Train's
    placement-group cleaner) would find both and fail; so the GCS port is chosen here and passed to
    every process as ``RAY_ADDRESS``."""
    import ray
    from ray._private.services import get_node_ip_address

    port = free_port()
    address = f"{get_node_ip_address()}:{port}"
    os.environ[GCS_PORT_ENV] = str(port)
    try:
        env_vars = {"RAY_ADDRESS": address, VERBOSE_ENV: os.environ.get(VERBOSE_ENV, "0")}
        ray.init(num_cpus=num_cpus, runtime_env={"env_vars": env_vars}, **options)
    finally:
        del os.environ[GCS_PORT_ENV]
