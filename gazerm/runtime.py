"""Starting or joining Ray, the same way for every gazerm command."""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import stat
import warnings
from pathlib import Path

GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"  # read by Ray when it starts a local head node
VERBOSE_ENV = "GAZERM_VERBOSE"  # "1": show the workers' and the libraries' own output (``gazerm -v``)
DASHBOARD_ENV = "GAZERM_RAY_DASHBOARD"  # "1": a local Ray also starts its dashboard (off by default)
# Ray Train's preemption watcher is one more actor process per run; a local Ray has no preemptible nodes.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"

AUTH_MODE_ENV = "RAY_AUTH_MODE"  # "token": every Ray process and client demands the cluster's token
AUTH_TOKEN_ENV, AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"  # where Ray reads the token

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
    every process as ``RAY_ADDRESS``.

    Only what a job on this machine uses is started: the dashboard (a dozen Python processes whose start
    competes with the training workers' for the CPUs, seconds on a small machine) only when
    ``GAZERM_RAY_DASHBOARD=1`` asks for it, no preemption watcher, and no idle workers prestarted for the
    driver (started without the job's ``runtime_env``, no task or actor of the job can use them)."""
    import ray
    from ray._private.services import get_node_ip_address

    enable_token_auth()
    port = free_port()
    address = f"{get_node_ip_address()}:{port}"
    os.environ[GCS_PORT_ENV] = str(port)
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")  # read by the Train controller, which inherits it
    try:
        env_vars = {"RAY_ADDRESS": address, VERBOSE_ENV: os.environ.get(VERBOSE_ENV, "0")}
        dashboard = os.environ.get(DASHBOARD_ENV) == "1"
        ray.init(
            num_cpus=num_cpus,
            runtime_env={"env_vars": env_vars},
            include_dashboard=dashboard,
            _system_config={"prestart_worker_first_driver": False},
            **options,
        )
    finally:
        del os.environ[GCS_PORT_ENV]


def default_token_path() -> Path:
    """Where Ray looks for the token when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set."""
    return Path.home() / ".ray" / "auth_token"


def enable_token_auth() -> None:
    """The token of the Ray token authentication a local Ray this process starts runs with.

    Ray's GCS, raylets, dashboard and job API listen on the machine's address, and without token
    authentication anyone who reaches their ports can run code as this user. Ray (>= 2.60, gazerm's
    floor) switches it on for a new local ``ray.init()`` unless ``RAY_AUTH_MODE`` says otherwise; gazerm
    leaves the mode to Ray (setting the variable after Ray is imported would leave this process's own
    client without the token, and the GCS refusing it). The token file Ray would create with the default
    umask (often 0644, readable by every user of the machine) is created here mode 0600, and an existing
    one with group or other permissions is made 0600.
    """
    mode = os.environ.get(AUTH_MODE_ENV, "token")
    if mode.lower() != "token" or os.environ.get(AUTH_TOKEN_ENV):
        return
    path = Path(os.environ.get(AUTH_TOKEN_PATH_ENV) or default_token_path())
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))  # what ``ray get-auth-token --generate`` writes
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o600)
        logging.getLogger(__name__).warning(
            "%s was readable by others (mode %o): made it 0600 (the Ray token is a credential)", path, mode
        )
