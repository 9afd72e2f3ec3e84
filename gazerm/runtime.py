"""Starting or joining Ray, the same way for every gazerm command."""

from __future__ import annotations

import logging
import math
import os

# Logical CPUs a local Ray keeps beyond the training workers' (and a search keeps out of its trials'):
# Ray Data's read and map tasks need their own, or they wait forever for a free CPU.
DATA_CPUS = 2


def quiet_ray_data() -> None:
    """Ray Data's live progress bars turn into megabytes of log lines in job logs and CI; gazerm prints
    its own progress."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False


def init_ray(reserved_cpus: float = 0) -> None:
    """Join the cluster (``RAY_ADDRESS``, ``ray job submit``) or start a local Ray.

    A local Ray gets at least :data:`DATA_CPUS` logical CPUs beyond what the training workers reserve.
    """
    import ray

    # Workers print progress with the plain print: Train V2's print patch would show each line twice.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    quiet_ray_data()
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        num_cpus = max(os.cpu_count() or 1, math.ceil(reserved_cpus) + DATA_CPUS)
        ray.init(num_cpus=num_cpus, logging_level=logging.WARNING)
