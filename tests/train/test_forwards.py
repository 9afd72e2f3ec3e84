"""``run.merge_micro_batches``: which micro-batches of a step run together (``train.forwards``), and that a
step's gradient is the same whether they run merged or one by one (a tiny Llama, built as a worker
builds it; DeepSpeed's engine replaced by one that keeps the step's gradients)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from gazerm.data.schema import Pair, PreferenceExample, examples_to_table
from gazerm.features.featurize import GazeFeaturizer
from gazerm.model.config import LoraSettings, ModelConfig
from gazerm.model.inputs import InputSpec
from gazerm.train.batch import MicroBatch, UnitLabels
from gazerm.train.collate import CollatedWindow, Origin
from gazerm.train.config import DataConfig, RunConfig, TrainJobConfig
from gazerm.train.forwards import fewest_forwards, forward_shapes, slot_budget
from gazerm.train.kinds import LossSpec
from gazerm.train.loop import Trainer
from gazerm.train.metrics import max_over_ranks
from gazerm.train.order import EpochPlan
from gazerm.train.units import ToUnits
from gazerm.train.worker_entry import LoopSettings
from tests.train.test_trainer_loop import UNUSED_BLOCKS, inputs


def micro(window: CollatedWindow, rows: int, length: int) -> MicroBatch:
    return MicroBatch(
        inputs(rows, length), UnitLabels(["s"] * (rows // 2)), Origin(window, np.arange(rows // 2))
    )


def test_consecutive_micro_batches_of_a_window_merge_while_their_padded_tokens_fit():
    first, second = CollatedWindow({}, []), CollatedWindow({}, [])
    step = [
        micro(first, 4, 10),
        micro(first, 4, 12),
        micro(first, 4, 30),
        micro(second, 4, 5),
        micro(second, 2, 5),
    ]
    shapes = forward_shapes(step)
    assert shapes == [[4, 10, 1], [4, 12, 0], [4, 30, 0], [4, 5, 1], [2, 5, 0]]
    # 8 rows x 12 = 96 fit 100; a third (12 rows x 30) does not; the next window starts its own forward
    assert fewest_forwards(shapes, budget=100) == [[0, 1], [2], [3, 4]]
    assert fewest_forwards(shapes, budget=10_000) == [[0, 1, 2], [3, 4]]
    assert fewest_forwards(shapes, budget=20) == [[0], [1], [2], [3], [4]]  # alone even over the budget


def test_micro_batches_without_a_window_never_merge():
    unwindowed = MicroBatch(inputs(4, 3), UnitLabels(["s", "s"]))
    assert fewest_forwards(forward_shapes([unwindowed, unwindowed]), budget=10_000) == [[0], [1]]


def test_the_budget_is_the_planned_micro_batch_at_max_length():
    config = TrainJobConfig(data=DataConfig(max_length=256), run=RunConfig(micro_batch_size=3))
    assert slot_budget(config) == 3 * 2 * 256


class GradientEngine:
    """The model called as DeepSpeed's engine calls it; keeps the gradients an optimizer step would use."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.module, self.device = model, torch.device("cpu")
        self.forwards, self.boundary, self.step_gradients = 0, False, {}
        self.backward_losses: list[torch.Tensor] = []

    def __call__(self, **model_inputs):
        self.forwards += 1
        return self.module(**model_inputs)

    def train(self) -> None:
        self.module.train()

    def set_gradient_accumulation_boundary(self, boundary: bool) -> None:
        self.boundary = boundary

    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool) -> None:
        self.backward_losses.append(loss.detach().clone())
        loss.backward()

    def step(self) -> None:
        if self.boundary:
            named = self.module.named_parameters()
            self.step_gradients = {n: p.grad.clone() for n, p in named if p.grad is not None}


def trainer(merge: bool, monkeypatch: pytest.MonkeyPatch, micro_batch_size: int = 1) -> Trainer:
    import deepspeed

    monkeypatch.setattr(
        deepspeed, "initialize", lambda model, optimizer, **_: (GradientEngine(model), optimizer)
    )
    config = TrainJobConfig(
        model=ModelConfig(backbone="tiny-llama", fp_dropout=[0.0, 0.0], lora=LoraSettings(dropout=0.0)),
        data=DataConfig(max_length=256),
        run=RunConfig(micro_batch_size=micro_batch_size, grad_accum=6, seed=3, merge_micro_batches=merge),
    )
    loss = LossSpec.of(config)
    spec = InputSpec({"predictor": "reading_model"}, config.data.max_length)
    settings = LoopSettings(1, "", "", EpochPlan.of(UNUSED_BLOCKS, config).to_dict(), spec, loss)
    built = Trainer(config, settings, 0, None)
    empty = ToUnits(loss).schema.empty_table()
    built.setup({"validation": empty, "test": empty})
    return built


def pairs_of_many_lengths() -> pa.Table:
    examples = [
        PreferenceExample(
            f"e{i}",
            "f.jsonl",
            i,
            "Explain tides.",
            ["The moon pulls the sea. " * (i + 1), "Wind."],
            "pairwise",
            pairs=[Pair(0, 1) if i % 2 else Pair(1, 0)],
        )
        for i in range(6)
    ]
    return examples_to_table(examples)


def test_a_merged_step_has_the_gradient_of_its_micro_batches_one_by_one(monkeypatch):
    table = GazeFeaturizer()(pairs_of_many_lengths())
    gradients, forwards = {}, {}
    for merge in (False, True):
        run = trainer(merge, monkeypatch)
        micro_batches = run.collator(ToUnits(run.settings.loss)(table))
        assert len(micro_batches) == 6
        run._train_step(micro_batches, (time.perf_counter(), 0))
        gradients[merge], forwards[merge] = run.engine.step_gradients, run.engine.forwards
    assert forwards[True] < forwards[False] == 6
    assert gradients[True].keys() == gradients[False].keys() and any("lora_" in n for n in gradients[True])
    for name, gradient in gradients[False].items():
        torch.testing.assert_close(gradients[True][name], gradient, atol=1e-6, rtol=1e-4, msg=name)


def test_unmerged_each_micro_batch_weighs_as_deepspeeds_own_accumulation(monkeypatch):
    """Merging off, the loop divides every micro-batch's loss by the step's micro-batches, as DeepSpeed's
    ``backward`` does by gas: a short last micro-batch (here 1 pair of 2) weighs as much as a full one."""
    run = trainer(merge=False, monkeypatch=monkeypatch, micro_batch_size=2)
    micro_batches = run.collator(
        ToUnits(run.settings.loss)(GazeFeaturizer()(pairs_of_many_lengths()).slice(0, 5))
    )
    assert [micro.labels.num_units for micro in micro_batches] == [2, 2, 1]
    run._train_step(micro_batches, (time.perf_counter(), 0))
    expected = [run._loss(micro)[0].detach() / 3 for micro in micro_batches]
    assert all(torch.equal(got, want) for got, want in zip(run.engine.backward_losses, expected, strict=True))


def _agree(rank: int, store: str, steps: dict[int, list[int]], results: str) -> None:
    """One rank: its step's micro-batches (2 rows each, of these widths) grouped as the ranks agree."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    first, second = CollatedWindow({}, []), CollatedWindow({}, [])
    windows = {0: [first] * 4, 1: [first, first, second, second]}[rank]  # rank 1's window ends earlier
    micro_batches = [micro(window, 2, width) for window, width in zip(windows, steps[rank], strict=True)]
    shapes = forward_shapes(micro_batches)
    agreed = fewest_forwards(max_over_ranks(shapes, torch.device("cpu")), budget=40)
    Path(results, str(rank)).write_text(json.dumps(agreed))
    dist.destroy_process_group()


def test_ranks_run_the_same_forwards_grouped_by_their_largest_micro_batches(tmp_path):
    """Each rank's i-th forward holds its i-th micro-batches, so ranks dealt alike wait little for each
    other, and no forward merges across any rank's window."""
    import torch.multiprocessing as mp

    # alone, rank 0 would fit all four in one forward (8 rows x 5), rank 1 [0, 1], [2], [3]: the largest
    # widths (5, 5, 20, 20) with rank 1's window starting at 2 give both [0, 1], [2], [3]
    steps = {0: [5, 5, 5, 5], 1: [5, 5, 20, 20]}
    mp.spawn(_agree, args=(str(tmp_path / "store"), steps, str(tmp_path)), nprocs=2)
    agreed = {rank: json.loads((tmp_path / str(rank)).read_text()) for rank in steps}
    assert agreed == {0: [[0, 1], [2], [3]], 1: [[0, 1], [2], [3]]}
