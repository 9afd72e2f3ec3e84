"""What a search trial costs beyond training the same job directly, in one Ray instance.

    python benchmarks/trial_overhead.py [--trials 2] [--steps 8] [--output-dir runs/bench-trials]

Trains the quickstart job (tiny random Llama, 2 CPU workers, embedded default config) once with
``gazerm train``'s ``run_training``, then runs a search of ``--trials`` trials of the same job (the
feature subsets of ``tune_spaces/tiny.yaml``, one trial at a time, nothing else varied that changes the
work: learning rate only), and prints the wall time of each and the overhead per trial: the search's wall
time over its trials less the direct job's. The trial's own process (Tune's trial actor importing the
training driver), Tune's bookkeeping and the search's MLflow parent run make up the difference; the Ray
Train run inside each trial is the same as the direct one's.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from gazerm.config import with_overrides
from gazerm.train.config import TrainJobConfig
from gazerm.tune.space import SearchSpace

MASKS = [[1, 1, 1, 1, 1], [0, 1, 0, 1, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1]]  # one trial each


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2, choices=range(1, len(MASKS) + 1))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--output-dir", default="runs/bench-trials")
    args = parser.parse_args()

    from gazerm.runtime import configure_logging, init_ray
    from gazerm.train.job import ensure_dataset, run_training
    from gazerm.tune.search import run_search

    configure_logging(verbose_output=False)
    output = Path(args.output_dir).resolve()
    shutil.rmtree(output, ignore_errors=True)
    job = with_overrides(
        TrainJobConfig(),
        {
            "output_dir": str(output / "direct"),
            "run.max_steps": args.steps,
            "run.eval_every": args.steps,
            "tracking.tracking_uri": f"sqlite:///{output / 'mlflow.db'}",
        },
    )
    init_ray(job.run.num_workers * job.run.cpus_per_worker)
    dataset_dir, _ = ensure_dataset(job)  # prepared once, outside both timings
    job = with_overrides(job, {"data.dataset_dir": dataset_dir, "data.prepare": None})
    space = SearchSpace(
        name="overhead",
        params={"optim.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}},
        feature_subsets=MASKS[: args.trials],
        max_concurrent_trials=1,
    )

    started = time.perf_counter()
    run_training(job, resume=False)
    direct = time.perf_counter() - started
    started = time.perf_counter()
    outcome = run_search(job, space, fresh=True)
    search = time.perf_counter() - started

    trials = len(outcome.trials)
    per_trial = search / trials
    print(f"| direct job (s) | search of {trials} trials (s) | per trial (s) | overhead per trial (s) |")
    print("|---|---|---|---|")
    print(f"| {direct:.1f} | {search:.1f} | {per_trial:.1f} | {per_trial - direct:.1f} |")


if __name__ == "__main__":
    main()
