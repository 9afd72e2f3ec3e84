"""Validation metrics per source: pairwise accuracy, loss and reward margin; regression error; or, for
ranked lists, the accuracy over every ordered pair of a list and the listwise loss.

Totals are summed per source on each rank and merged across ranks before the ratios are
taken, so the numbers are exact whatever the number of workers.
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from gazerm.train.batch import UnitLabels
from gazerm.train.kinds import LossSpec


def peak_memory_gib(device: torch.device) -> float:
    """This process's peak memory so far in GiB: what torch allocated on a GPU, the resident set's high
    water mark on the CPU. Linux's ``VmHWM``, not ``ru_maxrss``: exec keeps the forking parent's peak in
    ``ru_maxrss``, so a process started by a large one (a test session, a notebook) read its parent's size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        with open("/proc/self/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # not Linux: macOS reports ru_maxrss in bytes
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**30
    return kib / 2**20


def sum_over_ranks(value: int, device: torch.device) -> int:
    """``value`` summed over every rank of the run (itself outside a distributed run); every rank must
    call it, with a tensor on its backend's device (``device``: the engine's)."""
    return _reduced_over_ranks(value, device, "sum")


def max_over_ranks(values: list[list[int]], device: torch.device) -> list[list[int]]:
    """Each entry's largest value over every rank (as :func:`sum_over_ranks`; every rank sends as many)."""
    return _reduced_over_ranks(values, device, "max")


def _reduced_over_ranks(value: Any, device: torch.device, reduction: Literal["sum", "max"]) -> Any:
    """``value`` (an int, or nested lists of them) reduced entry by entry over the ranks."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    reduced = torch.tensor(value, dtype=torch.long, device=device)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM if reduction == "sum" else dist.ReduceOp.MAX)
    return reduced.tolist()


@dataclass
class StartupClock:
    """Seconds from a job's start (the driver's wall clock) to the end of each start-up phase, in order:
    where the wait before the first step goes (the driver marks Ray and data, the workers the rest)."""

    started_at: float
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, phase: str) -> None:
        self.marks[phase] = time.time() - self.started_at

    def metrics(self) -> dict[str, float]:
        """``startup/<phase>_s``: seconds since the start at the end of each phase."""
        return {f"startup/{phase}_s": seconds for phase, seconds in self.marks.items()}

    def summary(self) -> str:
        """``first step after 41 s: ray 9.1 s, data 3.0 s, …`` (each phase's own duration)."""
        durations, previous = [], 0.0
        for phase, seconds in self.marks.items():
            durations.append(f"{phase} {seconds - previous:.1f} s")
            previous = seconds
        return f"first step after {previous:.0f} s: " + ", ".join(durations)


class StepAverage:
    """Training metrics of one optimizer step: the mean over its micro-batches, a merged forward's counting
    for each it holds (logging only the last forward's loss would make ``grad_accum`` change what
    train/loss means)."""

    def __init__(self) -> None:
        self.values: dict[str, list[tuple[float | torch.Tensor, float]]] = defaultdict(list)

    def add(self, metrics: dict[str, float | torch.Tensor], weight: float = 1.0) -> None:
        """Numbers or one-element tensors, read only when the step's means are taken (one host sync
        per step, not per micro-batch); ``weight``: how many of the step's micro-batches they speak for."""
        for name, value in metrics.items():
            self.values[name].append((value, weight))

    def pop(self) -> dict[str, float]:
        """The weighted means so far, and a fresh start for the next step."""
        means = {
            name: sum(float(value) * weight for value, weight in pairs) / sum(weight for _, weight in pairs)
            for name, pairs in self.values.items()
        }
        self.values.clear()
        return means


class EvalTotals:
    """Running sums per source; ``metrics()`` turns them into ``val/...`` (or ``test/...``) numbers."""

    def __init__(self, loss: LossSpec, tie_credit: float = 0.5) -> None:
        self.loss = loss
        self.tie_credit = tie_credit  # what a tie of two rewards counts as in accuracy (run.accuracy_ties)
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, rewards: torch.Tensor, labels: UnitLabels, use_margin: bool = False) -> None:
        """``rewards`` from any device; ``labels`` on the CPU."""
        rewards = rewards.detach().float().cpu()
        per_item = self.loss.kind.eval_totals(rewards, labels, use_margin, self.tie_credit)
        for index, source in enumerate(labels.sources):
            totals = self.sums[source]
            totals["count"] += 1
            for name, values in per_item.items():
                totals[name] += float(values[index])

    def all_reduce(self) -> EvalTotals:
        """Merge the sums of every rank (no-op outside a distributed run)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        gathered: list[dict[str, dict[str, float]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, {s: dict(t) for s, t in self.sums.items()})
        merged = EvalTotals(self.loss, self.tie_credit)
        for sums in gathered:
            for source, totals in (sums or {}).items():
                for name, value in totals.items():
                    merged.sums[source][name] += value
        return merged

    def metrics(self, split: str = "val") -> dict[str, float]:
        """``<split>/<name>`` over every source, ``<split>/<source>/<name>`` per source."""
        overall: dict[str, float] = defaultdict(float)
        for totals in self.sums.values():
            for name, value in totals.items():
                overall[name] += value
        result = self._ratios(overall, split)
        for source, totals in sorted(self.sums.items()):
            result.update(self._ratios(totals, f"{split}/{source}"))
        return result

    def _ratios(self, totals: dict[str, float], prefix: str) -> dict[str, float]:
        count = totals.get("count", 0.0)
        if not count:
            return {}
        return {**self.loss.kind.ratios(totals, prefix), f"{prefix}/count": count}
