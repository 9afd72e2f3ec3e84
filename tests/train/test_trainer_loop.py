"""The worker loop without Ray or DeepSpeed: a fake engine stands in for ``deepspeed.initialize``'s.

- Device placement: every model input and label reaches the engine's device before the forward. The
  engine here lives on the ``meta`` device, so a tensor left on the CPU fails the test as it would fail
  on a GPU.
- Exact resume: a run interrupted after a checkpoint and resumed from it trains on exactly the
  micro-batches an uninterrupted run trains on.
- Model selection: ``run.select: best`` remembers the best evaluation and, at the end, reloads its
  checkpoint before the test split is scored.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from gazerm.errors import ConfigError
from gazerm.model.config import LossConfig, ModelConfig
from gazerm.model.inputs import ModelInputs
from gazerm.model.reward_model import RewardOutput, build_tokenizer
from gazerm.train.batch import MicroBatch, UnitLabels
from gazerm.train.checkpoints import DEEPSPEED_DIR, LISTED, RAY_RUN_NAME, STATE_FILE, write_file_list
from gazerm.train.collate import UnitCollator
from gazerm.train.config import DataConfig, RunConfig, TrainJobConfig
from gazerm.train.loop import LoopSettings, Trainer, TrainerState
from gazerm.train.metrics import StartupClock, StepAverage
from gazerm.train.order import EpochPlan, RankStream, list_blocks


class FakeEngine:
    """Records each forward's inputs; checks they sit on ``device``; steps every ``accumulation`` calls."""

    def __init__(
        self,
        device: str = "cpu",
        accumulation: int = 1,
        crash_after: int | None = None,
        output_device: str | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.output_device = torch.device(output_device or device)
        self.accumulation = accumulation
        self.crash_after = crash_after
        self.micro_steps = 0
        self.forwards: list[tuple] = []
        self.packed: list[bool] = []
        self.groups: list[int] = []

    def __call__(self, **inputs: torch.Tensor) -> RewardOutput:
        if self.crash_after is not None and len(self.forwards) == self.crash_after:
            raise KeyboardInterrupt("node lost")
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                assert value.device == self.device, (
                    f"{name} is on {value.device}, the engine on {self.device}"
                )
        self.forwards.append(
            tuple(inputs["input_ids"].flatten().tolist()) if self.device.type == "cpu" else ()
        )
        self.packed.append(inputs["packed"])
        self.groups.append(inputs["groups"])
        rows, length = inputs["input_ids"].shape
        rewards = torch.linspace(0, 1, rows, device=self.output_device)
        lm = inputs["return_lm_logits"]
        logits = torch.zeros(rows, length, 11, device=self.output_device) if lm else None
        return RewardOutput(rewards, logits)

    def is_gradient_accumulation_boundary(self) -> bool:
        return (self.micro_steps + 1) % self.accumulation == 0

    def train(self) -> None: ...

    def eval(self) -> None: ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> None:
        self.micro_steps += 1

    def get_lr(self) -> list[float]:
        return [0.0]

    def load_checkpoint(self, directory: str, tag: str) -> None:
        self.loaded = (directory, tag)


def bare_trainer(config: TrainJobConfig, engine: FakeEngine, total_steps: int = 1) -> Trainer:
    """A Trainer with the fake engine, as ``Trainer.__init__`` leaves one (less Ray, DeepSpeed, MLflow)."""
    trainer = Trainer.__new__(Trainer)
    trainer.config, trainer.settings = config, LoopSettings(total_steps, "", "", {}, {})
    trainer.rank, trainer.world_size = 0, 2
    trainer.engine, trainer.device = engine, engine.device
    trainer.state, trainer.accumulated, trainer._tokens = TrainerState(), StepAverage(), 0
    trainer.metrics_logger, trainer.board = None, None
    trainer.startup = StartupClock(time.time())
    trainer._batches = {"validation": [], "test": []}  # collated already: no object store here
    return trainer


def inputs(rows: int, length: int = 6) -> ModelInputs:
    return ModelInputs(
        input_ids=torch.ones(rows, length, dtype=torch.long),
        attention_mask=torch.ones(rows, length, dtype=torch.long),
        gaze=torch.rand(rows, length, 5),
        gaze_mask=torch.ones(rows, length, dtype=torch.bool),
        response_mask=torch.ones(rows, length, dtype=torch.bool),
        implicit=torch.rand(rows, 8),
        implicit_mask=torch.ones(rows, dtype=torch.bool),
    )


MICRO_BATCHES = {
    "pairwise": MicroBatch(inputs(4), UnitLabels(["a", "b"], margin=torch.tensor([0.5, 1.0]))),
    "regression": MicroBatch(inputs(2), UnitLabels(["a", "b"], targets=torch.tensor([[1.0], [2.0]]))),
    "listwise": MicroBatch(
        inputs(3), UnitLabels(["a"], list_index=torch.tensor([[0, 1, 2]]), tiers=torch.tensor([[0, 1, 1]]))
    ),
}


@pytest.mark.parametrize(
    ("kind", "loss"),
    [
        ("pairwise", LossConfig(use_margin=True, lm_loss_coeff=0.5)),
        ("regression", LossConfig(kind="regression")),
        ("listwise", LossConfig(kind="listwise")),
    ],
)
def test_every_input_and_label_reaches_the_engine_device(kind, loss):
    trainer = bare_trainer(TrainJobConfig(loss=loss), FakeEngine("meta"))
    value, details = trainer._loss(MICRO_BATCHES[kind])  # the engine asserts the inputs' device
    assert value.device.type == "meta" and all(d.device.type == "meta" for d in details.values())


@pytest.mark.parametrize("kind", ["pairwise", "regression", "listwise"])
def test_evaluation_inputs_reach_the_engine_device(kind):
    engine = FakeEngine("meta", output_device="cpu")  # rewards come back readable; inputs are checked
    trainer = bare_trainer(TrainJobConfig(loss=LossConfig(kind=kind)), engine)
    trainer._batches["validation"] = [MICRO_BATCHES[kind]]
    assert trainer.evaluate()["val/count"] == MICRO_BATCHES[kind].labels.num_units


@pytest.mark.parametrize("packing", [False, True])
def test_data_packing_reaches_training_and_evaluation_forwards(packing):
    engine = FakeEngine()
    trainer = bare_trainer(TrainJobConfig(data=DataConfig(packing=packing)), engine)
    trainer._loss(MICRO_BATCHES["pairwise"])
    trainer._batches["validation"] = [MICRO_BATCHES["pairwise"]]
    trainer.evaluate()
    assert engine.packed == [packing, packing]


@pytest.mark.parametrize(
    ("kind", "pair_forward", "groups"),
    [("pairwise", "separate", 2), ("pairwise", "joint", 1), ("regression", "separate", 1)],
)
def test_separate_pair_forwards_reach_training_and_evaluation_forwards(kind, pair_forward, groups):
    engine = FakeEngine()
    config = TrainJobConfig(model=ModelConfig(pair_forward=pair_forward), loss=LossConfig(kind=kind))
    trainer = bare_trainer(config, engine)
    trainer._loss(MICRO_BATCHES[kind])
    trainer._batches["validation"] = [MICRO_BATCHES[kind]]
    trainer.evaluate()
    assert engine.groups == [groups, groups]


def test_a_micro_batch_moves_every_tensor():
    moved = MICRO_BATCHES["listwise"].to("meta")
    tensors = [*asdict(moved.inputs).values(), moved.labels.list_index, moved.labels.tiers]
    assert all(tensor.device.type == "meta" for tensor in tensors)
    assert MICRO_BATCHES["listwise"].inputs.gaze.device.type == "cpu"  # a copy; the original stays


def run_loop(config: TrainJobConfig, stream: RankStream, engine: FakeEngine, total: int, saved: list):
    """``Trainer.run`` with checkpoints kept in ``saved`` (newest last) and restored from there."""
    trainer = bare_trainer(config, engine, total)
    trainer.train_stream = stream
    trainer.evaluate_and_checkpoint = lambda final: saved.append(TrainerState(**asdict(trainer.state)))
    trainer.restore = lambda: setattr(
        trainer, "state", TrainerState(**asdict(saved[-1])) if saved else trainer.state
    )
    trainer.run()


@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_resumed_run_trains_on_exactly_the_uninterrupted_sequence(train_paths, accumulation):
    config = TrainJobConfig(run=RunConfig(micro_batch_size=2, grad_accum=accumulation, eval_every=3))
    plan = EpochPlan(tuple(list_blocks(train_paths, "pairwise")), 11, 2, 2, 2, 6)
    collator = UnitCollator(build_tokenizer(ModelConfig()), 64, 2, "pairwise")
    stream = RankStream(plan, 0, "pairwise", 1, collator)
    total = plan.micro_batches_per_rank * 2 // accumulation + 1  # into a third epoch

    whole = FakeEngine(accumulation=accumulation)
    run_loop(config, stream, whole, total, [])
    assert len(whole.forwards) == total * accumulation

    saved: list[TrainerState] = []
    crashed = FakeEngine(accumulation=accumulation, crash_after=len(whole.forwards) - 5)
    with pytest.raises(KeyboardInterrupt):
        run_loop(config, stream, crashed, total, saved)
    checkpoint = saved[-1]
    assert checkpoint.epoch >= 1 and checkpoint.step % config.run.eval_every == 0
    resumed = FakeEngine(accumulation=accumulation)
    run_loop(config, stream, resumed, total, saved)

    trained_before = checkpoint.step * accumulation  # micro-batches up to the checkpoint
    assert crashed.forwards[:trained_before] + resumed.forwards == whole.forwards


def selecting(tmp_path: Path, mode: str = "max") -> Trainer:
    run = RunConfig(select="best", select_metric="val/accuracy", select_mode=mode)
    return bare_trainer(TrainJobConfig(output_dir=str(tmp_path), run=run), FakeEngine(output_device="cpu"))


@pytest.mark.parametrize(
    ("mode", "values", "best"),
    [("max", [0.5, 0.75, 0.75, 0.6], 30), ("min", [0.5, 0.25, 0.4, 0.25], 40)],
)
def test_the_best_evaluation_is_remembered_ties_to_the_later(tmp_path, mode, values, best):
    trainer = selecting(tmp_path, mode)
    for step, value in enumerate(values, start=1):
        trainer.state.step = 10 * step
        trainer._track_best({"val/accuracy": value, "val/loss": 1.0})
    assert (trainer.state.best_step, trainer.state.best_value) == (best, values[best // 10 - 1])


def test_a_selection_metric_the_run_lacks_is_named(tmp_path):
    trainer = selecting(tmp_path)
    trainer.config.run.select_metric = "val/f1"
    with pytest.raises(ConfigError, match=r"val/f1.*val/accuracy"):
        trainer._track_best({"val/accuracy": 0.5, "val/a/accuracy": 0.5})


def _checkpoint(output: Path, step: int) -> Path:
    directory = output / RAY_RUN_NAME / f"checkpoint_{step:06d}"
    (directory / DEEPSPEED_DIR).mkdir(parents=True)
    state = {"step": step, "layout": {"world_size": 1}, LISTED: True}
    (directory / STATE_FILE).write_text(json.dumps(state))
    write_file_list(directory, 0)
    return directory


def test_the_best_checkpoint_is_reloaded_before_the_test_split_is_scored(tmp_path):
    trainer = selecting(tmp_path)
    best = _checkpoint(tmp_path, 20)
    _checkpoint(tmp_path, 40)
    trainer.state.step, trainer.state.best_step = 40, 20
    trainer._batches["test"] = [MICRO_BATCHES["pairwise"]]
    metrics = trainer._select_and_test()
    assert trainer.engine.loaded == (str(best / DEEPSPEED_DIR), "state")
    assert metrics["selected_step"] == 20 and metrics["test/count"] == 2
    assert 0 <= metrics["test/accuracy"] <= 1 and not any(k.startswith("val/") for k in metrics)


def test_the_last_evaluation_needs_no_reload(tmp_path):
    trainer = bare_trainer(TrainJobConfig(output_dir=str(tmp_path)), FakeEngine())
    trainer.state.step = 40
    assert trainer._select_and_test() == {"selected_step": 40}  # no test units, nothing loaded
    assert not hasattr(trainer.engine, "loaded")
