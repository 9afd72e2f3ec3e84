"""``run.launcher: local``: a job's ranks as processes on this machine, without Ray.

Under Ray Train a job's first step waits for a local Ray to start, then for Ray Train's controller, its
helper actors and the worker actors (each a Python process): 10-15 s on a small machine before the
workers even import torch. Here torch's elastic launcher (what ``torchrun`` runs) starts ``num_workers``
processes, and each runs the same ``train_loop_per_worker`` in Ray Train's local mode
(``ScalingConfig(num_workers=0)`` with torchrun's environment), which gives the loop its rank, world size
and process group without a Ray cluster. What Ray Train's controller did besides is done here:
:class:`~gazerm.train.checkpoints.LocalCheckpoints` keeps checkpoints in the layout Ray Train writes, a
crashed group restarts from the latest one (``run.max_failures``, the launcher's restarts), and a
mistake the user must fix ends the run at once, as one line, as :mod:`gazerm.train.failures` does.

The launcher's agent starts when the job does, and imports what every rank imports (torch, transformers,
peft, DeepSpeed, Ray Train: seconds of CPU) while the driver prepares data and opens the MLflow run. On
CPUs the ranks are then forked from it and start with all of that imported: paid once per job, not
once per rank and again for every restarted group. On GPUs they are spawned, each importing on its own:
CUDA does not survive a fork, and the agent's imports (DeepSpeed's accelerator probe) may touch it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from gazerm.errors import ConfigError, GazermError
from gazerm.runtime import free_port, verbose
from gazerm.storage import Storage, open_atomic_binary
from gazerm.train.checkpoints import latest_checkpoint
from gazerm.train.config import RunConfig, TrainJobConfig
from gazerm.train.deepspeed_config import choose_accelerator

USER_ERROR = "user_error.pickle"  # the first GazermError a rank raised, for the driver and later attempts
RESULT = "result.pickle"  # rank 0's final report
FAILURE = "failure.json"  # how the ranks failed, when not by a GazermError
UNLIMITED_RESTARTS = sys.maxsize  # run.max_failures: -1
KILLED = -9  # a rank's exit code when the kernel's OOM killer (or anyone) sent SIGKILL
LOST_PEER_GRACE_S = 2.0  # a failed rank's wait before it exits: the launcher polls every 0.1 s
# What every rank imports (the loop brings torch, transformers, peft and MLflow); forked ranks inherit it
# from the agent. DeepSpeed picks its accelerator at import (hence choose_accelerator before it), and
# deepspeed.initialize imports its Muon optimizer (torch's compiler with it) on every start.
WARM_IMPORTS = (
    "gazerm.train.loop",
    "ray.train.torch",
    "deepspeed",
    "deepspeed.runtime.zero.muon.muon_optimizer",
)


def job_launcher(config: TrainJobConfig) -> LocalLauncher | None:
    """The local launcher a job runs under, not yet entered; None for Ray Train and for a frozen backbone's
    job (trained in the driver). Importing this module is light (no torch), so a caller can enter it
    before importing the job's own modules (``gazerm train`` does: ~2 s of the agent's imports earlier)."""
    if config.run.launcher != "local" or config.model.frozen:
        return None
    return LocalLauncher(config.run, verbose())


class LocalLauncher:
    """The launcher's agent for one job: started on entering the ``with`` block, so that its imports
    overlap the driver's set-up, handed the ranks' loop config when the driver has it (:meth:`run`),
    stopped on leaving the block whatever happened (a job that fails before its launch never sends one).
    Its working folder (results, the ranks' logs) goes with it, unless a crash's message names the logs.

    The agent runs in a process of its own, spawned afresh for every launch (a staged job and a test
    session launch several): with two launches in one process, the second one's restart failed here, its
    ranks connecting to the dead ranks of its first attempt (reproduced with bare gloo ranks)."""

    def __init__(self, run: RunConfig, verbose: bool) -> None:
        self._run, self._verbose = run, verbose
        self._keep_work = False  # only a crash's message sends the reader to the ranks' logs in it

    def __enter__(self) -> LocalLauncher:
        self.work = Path(tempfile.mkdtemp(prefix="gazerm-local-"))
        context = multiprocessing.get_context("spawn")
        inbox, self._outbox = context.Pipe(duplex=False)
        self._agent = context.Process(
            target=_run_agent, args=(self._run, inbox, str(self.work), self._verbose), name="gazerm-launcher"
        )
        self._agent.start()
        inbox.close()  # the agent's end
        return self

    def __exit__(self, *exc: object) -> None:
        self._outbox.close()
        if self._agent.is_alive():  # never launched (the job failed first), or the driver was interrupted
            self._agent.terminate()  # before its launch the agent just ends; torch's agent stops its ranks
            self._agent.join(timeout=30)
        if self._agent.is_alive():
            self._agent.kill()
        if not self._keep_work:
            shutil.rmtree(self.work, ignore_errors=True)

    def run(self, loop_config: dict[str, Any], if_killed: Callable[[], str]) -> dict[str, Any]:
        """Run the ranks and return rank 0's final report (``LocalCheckpoints.final``). A rank's
        GazermError is raised as is; a rank killed (for memory) raises ``if_killed()``'s line."""
        with contextlib.suppress(BrokenPipeError):  # an agent dead before its launch: its exit code below
            self._outbox.send(loop_config)
        self._agent.join()
        if self._agent.exitcode == 0:
            return pickle.loads((self.work / RESULT).read_bytes())
        if (self.work / USER_ERROR).exists():
            raise pickle.loads((self.work / USER_ERROR).read_bytes())
        failure = json.loads((self.work / FAILURE).read_text()) if (self.work / FAILURE).exists() else {}
        if failure.get("killed"):
            raise ConfigError(if_killed())
        message = failure.get("message", f"the local launcher exited with code {self._agent.exitcode}")
        self._keep_work = True
        raise RuntimeError(f"{message}\nthe ranks' output: {self.work / 'logs'}")


def _run_agent(run: RunConfig, inbox: Connection, work: str, verbose: bool) -> None:
    """The launcher's process: warm the imports (CPU), wait for the loop config, then torch's elastic
    agent starting and watching the ranks; what came of it in ``work`` (rank 0's report, or the failure)
    for :meth:`LocalLauncher.run`. Returns quietly when the driver ends without a launch."""
    fork = not run.use_gpu
    if fork:
        # Before torch is imported: its OpenMP runtime reads the thread count once, at load, and the
        # forked ranks inherit it (one thread per CPU a rank reserves, as Ray sets).
        os.environ["OMP_NUM_THREADS"] = str(max(1, int(run.cpus_per_worker)))
        choose_accelerator(use_gpu=False)
        for module in WARM_IMPORTS:
            try:
                importlib.import_module(module)
            except ImportError:  # another DeepSpeed's layout: the ranks import what they need themselves
                logging.getLogger(__name__).debug("not warmed: %s", module, exc_info=True)
    try:
        loop_config = inbox.recv()
    except EOFError:
        return
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=run.num_workers,
        run_id=Path(work).name,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: a free port on this machine
        max_restarts=UNLIMITED_RESTARTS if run.max_failures == -1 else run.max_failures,
        start_method="fork" if fork else "spawn",
        # The ranks' own output (DeepSpeed's, the libraries') goes to files unless -v; progress comes
        # through the board.
        logs_specs=DefaultLogsSpecs(log_dir=f"{work}/logs", redirects=Std.NONE if verbose else Std.ALL),
    )
    if not verbose:
        logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    try:
        returned = elastic_launch(launch, run_local_rank)(loop_config, work)
    except ChildFailedError as failure:
        killed = any(process.exitcode == KILLED for process in failure.failures.values())
        Path(work, FAILURE).write_text(json.dumps({"killed": killed, "message": str(failure)}))
        sys.exit(1)
    Path(work, RESULT).write_bytes(pickle.dumps(returned[0]))


def run_local_rank(loop_config: dict[str, Any], work: str) -> dict[str, Any] | None:
    """One rank's process: Ray Train's local mode around ``train_loop_per_worker``, continuing from the
    latest checkpoint when the launcher restarted the group. A crash's traceback reaches the launcher
    (``record``)."""
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_run_rank)(loop_config, work)


def _run_rank(loop_config: dict[str, Any], work: str) -> dict[str, Any] | None:
    import ray.train
    from ray.train.torch import TorchTrainer

    from gazerm.train.worker_entry import train_loop_per_worker

    error_file = Path(work) / USER_ERROR
    if error_file.exists():  # another rank's mistake, the same on this attempt: end the run now
        raise pickle.loads(error_file.read_bytes())
    _own_store_per_attempt()
    settings = loop_config["settings"]
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")):
        output = Storage.of(loop_config["job"]["output_dir"])
        latest = latest_checkpoint(output) or settings.resume_from
        loop_config = {**loop_config, "settings": dataclasses.replace(settings, resume_from=latest)}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=0),  # Ray Train's local mode
    )
    try:
        return trainer.fit().return_value
    except GazermError as error:
        if not error_file.exists():
            with open_atomic_binary(error_file) as handle:
                handle.write(pickle.dumps(error))
        raise
    except RuntimeError:
        # Most often a collective that lost its peer (gloo: "Connection closed by peer"). The launcher
        # reports the first rank it sees fail: wait, so that it sees the lost rank first and the run's
        # failure says what ended it (a kill for memory, a crash), not this broken connection.
        time.sleep(LOST_PEER_GRACE_S)
        raise


def _own_store_per_attempt() -> None:
    """Point this attempt's process group at a store of its own, hosted by rank 0 on a port it picks and
    hands the others through the agent's store. The agent's store lives across attempts, and a restarted
    group that rendezvoused there could read the dead ranks' addresses from the attempt before (it then
    waits for them until the collective timeout)."""
    from datetime import timedelta

    import torch.distributed as dist

    attempt, rank = os.environ["TORCHELASTIC_RESTART_COUNT"], int(os.environ["RANK"])
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
    agent.set_timeout(timedelta(minutes=5))
    key = f"gazerm/attempt_{attempt}/master_port"
    if rank == 0:
        agent.set(key, str(free_port()))
    os.environ["MASTER_PORT"] = agent.get(key).decode()
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "False"  # rank 0 hosts the store (torch's env:// rendezvous)
