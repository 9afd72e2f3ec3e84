"""The worker loop without Ray or DeepSpeed: a fake engine stands in for ``deepspeed.initialize``'s and a
recorder for the MLflow run and the driver's console; the trainer is otherwise set up as a worker sets it up.

- Device placement: every model input and label reaches the engine's device before the forward. The
  engine here lives on the ``meta`` device, so a tensor left on the CPU fails the test as it would fail
  on a GPU.
- Exact resume: a run interrupted after a checkpoint and resumed from it trains on exactly the
  micro-batches an uninterrupted run trains on.
- Per-step tokens: ``train/tokens`` is what the step's micro-batches held.
- Model selection: ``run.select: best`` remembers the best evaluation and, at the end, reloads its
  checkpoint before the test split is scored.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from gazerm.data.schema import Pair, PreferenceExample, examples_to_table
from gazerm.errors import ConfigError
from gazerm.features.featurize import GazeFeaturizer
from gazerm.model.config import LossConfig, ModelConfig
from gazerm.model.inputs import InputSpec, ModelInputs
from gazerm.model.reward_model import RewardOutput
from gazerm.train.batch import MicroBatch, UnitLabels
from gazerm.train.checkpoints import DEEPSPEED_DIR, LISTED, RAY_RUN_NAME, STATE_FILE, write_file_list
from gazerm.train.config import DataConfig, RunConfig, TrainJobConfig
from gazerm.train.job import _checkpoint_config
from gazerm.train.kinds import LossSpec
from gazerm.train.loop import Trainer, TrainerState
from gazerm.train.order import Block, EpochPlan, list_blocks
from gazerm.train.progress import Event
from gazerm.train.units import ToUnits
from gazerm.train.worker_entry import SELECT_RANK, LoopSettings

UNUSED_BLOCKS = [Block("never-read.parquet", 0, 8)]  # for trainers that train on nothing


class FakeEngine:
    """Records each forward's inputs (checking they sit on ``device``), each backward's loss and the
    accumulation boundaries the loop sets."""

    def __init__(
        self,
        device: str = "cpu",
        crash_after: int | None = None,
        output_device: str | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.output_device = torch.device(output_device or device)
        self.crash_after = crash_after
        self.micro_steps = 0
        self.forwards: list[tuple] = []
        self.tokens: list[int] = []
        self.packed: list[bool] = []
        self.groups: list[int] = []
        self.shared_prefix: list[bool] = []
        self.boundaries: list[bool] = []
        self.losses: list[float] = []

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
        self.tokens.append(int(inputs["attention_mask"].sum()) if self.device.type == "cpu" else 0)
        self.packed.append(inputs["packed"])
        self.groups.append(inputs["groups"])
        self.shared_prefix.append(inputs["shared_prefix"])
        rows, length = inputs["input_ids"].shape
        rewards = torch.linspace(0, 1, rows, device=self.output_device)
        lm = inputs["return_lm_logits"]
        logits = torch.zeros(rows, length, 11, device=self.output_device) if lm else None
        return RewardOutput(rewards, logits)

    def set_gradient_accumulation_boundary(self, boundary: bool) -> None:
        self.boundaries.append(boundary)

    def train(self) -> None: ...

    def eval(self) -> None: ...

    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool) -> None:
        assert not scale_wrt_gas, "the loop weights each forward's loss itself"
        self.losses.append(float(loss))

    def step(self) -> None:
        self.micro_steps += 1

    def get_lr(self) -> list[float]:
        return [0.0]

    def get_global_grad_norm(self) -> float | None:
        return None

    def load_checkpoint(self, directory: str, tag: str) -> None:
        self.loaded = (directory, tag)


class Recorder:
    """The reporter a test reads back: metrics by step, counters, events."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.counts: Counter[str] = Counter()
        self.events: list[Event] = []

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.logged.append((step, dict(metrics)))

    def count(self, key: str) -> int:
        self.counts[key] += 1
        return self.counts[key]

    def post(self, event: Event) -> None:
        self.events.append(event)

    def series(self, name: str) -> list[float]:
        return [metrics[name] for _, metrics in self.logged if name in metrics]


class FakeEngineTrainer(Trainer):
    """The trainer with ``engine`` where DeepSpeed's would be; everything else is set up for real."""

    def __init__(self, *args, engine: FakeEngine, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fake_engine = engine

    def build_engine(self) -> FakeEngine:
        return self.fake_engine


def set_up(
    config: TrainJobConfig,
    engine: FakeEngine,
    total_steps: int = 1,
    blocks: list[Block] = UNUSED_BLOCKS,
    splits: dict[str, pa.Table] | None = None,
) -> FakeEngineTrainer:
    """Rank 0's trainer, set up as a worker's is: the driver's settings, then ``setup`` (no units to score
    unless ``splits`` has them)."""
    loss = LossSpec.of(config)
    plan = EpochPlan.of(blocks, config)
    settings = LoopSettings(
        total_steps, "", "", plan.to_dict(), InputSpec({"predictor": "reading_model"}, max_length=512), loss
    )
    trainer = FakeEngineTrainer(config, settings, 0, Recorder(), engine=engine)
    empty = ToUnits(loss).schema.empty_table()
    trainer.setup({"validation": empty, "test": empty, **(splits or {})})
    return trainer


def units(kind: str) -> pa.Table:
    """Two examples' units of ``kind`` (pairwise: 2, regression: 4, listwise: 2), with predicted gaze."""
    examples = [
        PreferenceExample(
            f"u{i}", "f.jsonl", i, "Say hi.", [text, "No."], "pairwise", pairs=[Pair(0, 1)], scores=[1.0, 0.0]
        )
        for i, text in enumerate(["Hello there, friend.", "Hi."])
    ]
    loss = LossSpec.of(TrainJobConfig(loss=LossConfig(kind=kind)))
    return ToUnits(loss)(GazeFeaturizer()(examples_to_table(examples)))


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
    trainer = set_up(TrainJobConfig(loss=loss), FakeEngine("meta"))
    value, details = trainer._loss(MICRO_BATCHES[kind])  # the engine asserts the inputs' device
    assert value.device.type == "meta" and all(d.device.type == "meta" for d in details.values())


@pytest.mark.parametrize("kind", ["pairwise", "regression", "listwise"])
def test_evaluation_inputs_reach_the_engine_device(kind):
    engine = FakeEngine("meta", output_device="cpu")  # rewards come back readable; inputs are checked
    validation = units(kind)
    trainer = set_up(TrainJobConfig(loss=LossConfig(kind=kind)), engine, splits={"validation": validation})
    assert trainer.evaluate()["val/count"] == validation.num_rows


@pytest.mark.parametrize("packing", [False, True])
def test_data_packing_reaches_training_and_evaluation_forwards(packing):
    engine = FakeEngine()
    config = TrainJobConfig(data=DataConfig(packing=packing))
    trainer = set_up(config, engine, splits={"validation": units("pairwise")})
    trainer._loss(MICRO_BATCHES["pairwise"])
    trainer.evaluate()  # both units in one micro-batch
    assert engine.packed == [packing, packing]


@pytest.mark.parametrize(
    ("kind", "pair_forward", "groups", "shared"),
    [
        ("pairwise", "separate", 2, False),
        ("pairwise", "joint", 1, False),
        ("pairwise", "shared", 1, True),
        ("regression", "separate", 1, False),
        ("regression", "shared", 1, False),
    ],
)
def test_the_pair_forward_reaches_training_and_evaluation_forwards(kind, pair_forward, groups, shared):
    engine = FakeEngine()
    config = TrainJobConfig(model=ModelConfig(pair_forward=pair_forward), loss=LossConfig(kind=kind))
    trainer = set_up(config, engine, splits={"validation": units(kind)})
    trainer._loss(MICRO_BATCHES[kind])
    trainer.evaluate()
    assert engine.groups == [groups, groups] and engine.shared_prefix == [shared, shared]


def test_a_micro_batch_moves_every_tensor():
    moved = MICRO_BATCHES["listwise"].to("meta")
    tensors = [*asdict(moved.inputs).values(), moved.labels.list_index, moved.labels.tiers]
    assert all(tensor.device.type == "meta" for tensor in tensors)
    assert MICRO_BATCHES["listwise"].inputs.gaze.device.type == "cpu"  # a copy; the original stays


def run_loop(
    config: TrainJobConfig, blocks: list[Block], engine: FakeEngine, total: int, saved: list
) -> FakeEngineTrainer:
    """``Trainer.run`` with checkpoints kept in ``saved`` (newest last) and restored from there."""
    trainer = set_up(config, engine, total, blocks)
    trainer.evaluate_and_checkpoint = lambda final: saved.append(TrainerState(**asdict(trainer.state)))
    trainer.restore = lambda: setattr(
        trainer, "state", TrainerState(**asdict(saved[-1])) if saved else trainer.state
    )
    trainer.run()
    return trainer


def small_windows(accumulation: int, merge: bool = False) -> TrainJobConfig:
    return TrainJobConfig(
        data=DataConfig(bucket_window=2, shuffle_buffer=6, max_length=512),  # the inputs' (set_up)
        run=RunConfig(
            micro_batch_size=2, grad_accum=accumulation, eval_every=3, seed=11, merge_micro_batches=merge
        ),
    )


def per_step(values: list, boundaries: list[bool]) -> list:
    """``values``, one per forward, summed over each optimizer step's forwards."""
    sums, running = [], 0
    for value, boundary in zip(values, boundaries, strict=True):
        running += value
        if boundary:
            sums.append(running)
            running = 0
    return sums


@pytest.mark.parametrize(("accumulation", "merge"), [(1, False), (2, False), (2, True)])
def test_a_resumed_run_trains_on_exactly_the_uninterrupted_sequence(train_paths, accumulation, merge):
    config = small_windows(accumulation, merge)
    blocks = list_blocks(train_paths, LossSpec.of(config))
    per_epoch = -(-EpochPlan.of(blocks, config).units_per_rank // 2)  # micro-batches of 2 units
    total = per_epoch * 2 // accumulation + 1  # into a third epoch

    whole = FakeEngine()
    run_loop(config, blocks, whole, total, [])
    assert whole.boundaries.count(True) == total
    if merge:  # a step's two micro-batches of one window run as one forward
        assert total < len(whole.forwards) < total * accumulation
    else:
        assert whole.boundaries == ([False] * (accumulation - 1) + [True]) * total

    saved: list[TrainerState] = []
    crashed = FakeEngine(crash_after=len(whole.forwards) - 5)
    with pytest.raises(KeyboardInterrupt):
        run_loop(config, blocks, crashed, total, saved)
    checkpoint = saved[-1]
    assert checkpoint.epoch >= 1 and checkpoint.step % config.run.eval_every == 0
    resumed = FakeEngine()
    run_loop(config, blocks, resumed, total, saved)

    steps_ended = [index + 1 for index, boundary in enumerate(crashed.boundaries) if boundary]
    trained_before = steps_ended[checkpoint.step - 1]  # forwards up to the checkpoint
    assert crashed.forwards[:trained_before] + resumed.forwards == whole.forwards


@pytest.mark.parametrize("merge", [False, True])
def test_each_step_logs_the_tokens_of_its_micro_batches(train_paths, merge):
    config = small_windows(accumulation=2, merge=merge)
    engine = FakeEngine()
    trainer = run_loop(config, list_blocks(train_paths, LossSpec.of(config)), engine, 5, [])
    tokens = per_step(engine.tokens, engine.boundaries)
    assert trainer.reporter.series("train/tokens") == tokens and min(tokens) > 0
    assert len(set(tokens)) > 1  # real counts, not one number repeated
    assert [event["kind"] for event in trainer.reporter.events].count("step") == 5


def test_merging_changes_the_forwards_not_the_tokens_each_step_trains_on(train_paths):
    tokens, forwards = {}, {}
    for merge in (False, True):
        config = small_windows(accumulation=4, merge=merge)
        engine = FakeEngine()
        trainer = run_loop(config, list_blocks(train_paths, LossSpec.of(config)), engine, 6, [])
        tokens[merge] = per_step(engine.tokens, engine.boundaries)
        forwards[merge] = len(engine.forwards)
        assert trainer.reporter.series("train/forwards") == per_step([1] * forwards[merge], engine.boundaries)
    assert tokens[False] == tokens[True]
    assert forwards[True] < forwards[False] == 6 * 4


def selecting(tmp_path: Path, mode: str = "max", ties: str = "later") -> Trainer:
    run = RunConfig(select="best", select_metric="val/accuracy", select_mode=mode, select_ties=ties)
    config = TrainJobConfig(output_dir=str(tmp_path), run=run)
    return set_up(config, FakeEngine(output_device="cpu"), splits={"test": units("pairwise")})


@pytest.mark.parametrize(
    ("mode", "ties", "values", "best", "ranks"),
    [
        ("max", "later", [0.5, 0.75, 0.75, 0.6], 30, [1, 2, 3, -1]),
        ("min", "later", [0.5, 0.25, 0.4, 0.25], 40, [1, 2, -1, 3]),
        ("max", "earlier", [0.5, 0.75, 0.75, 0.6], 20, [1, 2, -1, -1]),  # the reference's strict rule
        ("min", "earlier", [0.5, 0.25, 0.4, 0.25], 20, [1, 2, -1, -1]),
    ],
)
def test_the_best_evaluation_is_remembered_ties_as_the_run_says(tmp_path, mode, ties, values, best, ranks):
    trainer = selecting(tmp_path, mode, ties)
    reported = []
    for step, value in enumerate(values, start=1):
        trainer.state.step = 10 * step
        reported.append(trainer._track_best({"val/accuracy": value, "val/loss": 1.0}))
    assert (trainer.state.best_step, trainer.state.best_value) == (best, values[best // 10 - 1])
    # Ray keeps the checkpoints of the highest ranks: the best evaluation's is the highest.
    assert reported == ranks and reported[best // 10 - 1] == max(reported)


def reporting(
    tmp_path: Path,
    run: RunConfig,
    total: int,
    train_paths: list[str],
    scores: Callable[[int], float] = lambda _: 0.5,
) -> list[dict[str, float]]:
    """The metrics of each checkpoint a run of ``total`` steps reports (the validation at step ``s`` scores
    ``scores(s)``)."""
    config = TrainJobConfig(output_dir=str(tmp_path), data=DataConfig(bucket_window=2), run=run)
    trainer = set_up(config, FakeEngine(), total, list_blocks(train_paths, LossSpec.of(config)))
    trainer.evaluate = lambda split="validation": {
        "val/accuracy": scores(trainer.state.step),
        "val/count": 2.0,
    }
    trainer.restore = lambda: None  # a fresh run: no Ray checkpoint to ask for
    reports = []
    trainer._report = lambda metrics, final: reports.append(metrics)
    trainer.run()
    return reports


@pytest.mark.parametrize(
    ("final_eval", "total", "reports"),
    [
        (True, 5, [(2, 0.2), (4, 0.4), (5, 0.5)]),
        # The last step checkpointed, not evaluated: it reports the last evaluation's (Ray Tune needs one) ...
        (False, 5, [(2, 0.2), (4, 0.4), (5, 0.4)]),
        (False, 4, [(2, 0.2), (4, 0.4)]),  # ... unless it is one of every eval_every's
    ],
)
def test_the_last_step_is_evaluated_as_run_final_eval_says(tmp_path, train_paths, final_eval, total, reports):
    run = RunConfig(micro_batch_size=2, eval_every=2, final_eval=final_eval)
    reported = reporting(tmp_path, run, total, train_paths, scores=lambda step: step / 10)
    assert [(metrics["step"], metrics["val/accuracy"]) for metrics in reported] == reports
    assert not any(SELECT_RANK in metrics for metrics in reported)  # run.select: last, Ray ranks nothing


def test_an_unevaluated_last_step_reports_the_best_evaluation(tmp_path, train_paths):
    run = RunConfig(micro_batch_size=2, eval_every=2, final_eval=False, select="best")
    reported = reporting(tmp_path, run, 5, train_paths, scores={2: 0.6, 4: 0.4}.get)
    assert [(metrics["step"], metrics["val/accuracy"]) for metrics in reported] == [
        (2, 0.6),
        (4, 0.4),
        (5, 0.6),
    ]


def test_ray_keeps_checkpoints_by_the_rank_the_run_reports(tmp_path, train_paths):
    """Equal accuracies under select_ties: earlier: the first evaluation ranks highest, so Ray keeps its
    checkpoint, where ranking by the accuracy itself it would keep the later of equals."""
    run = RunConfig(micro_batch_size=2, eval_every=2, final_eval=False, select="best", select_ties="earlier")
    reported = reporting(tmp_path, run, 5, train_paths)
    assert [(metrics["step"], metrics[SELECT_RANK]) for metrics in reported] == [(2, 1), (4, -1), (5, -1)]
    ray_config = _checkpoint_config(TrainJobConfig(run=run))
    assert (ray_config.checkpoint_score_attribute, ray_config.checkpoint_score_order) == (SELECT_RANK, "max")


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
    metrics = trainer._select_and_test()
    assert trainer.engine.loaded == (str(best / DEEPSPEED_DIR), "state")
    assert metrics["selected_step"] == 20 and metrics["test/count"] == 2
    assert 0 <= metrics["test/accuracy"] <= 1 and not any(k.startswith("val/") for k in metrics)


def test_the_last_evaluation_needs_no_reload(tmp_path):
    trainer = set_up(TrainJobConfig(output_dir=str(tmp_path)), FakeEngine())
    trainer.state.step = 40
    assert trainer._select_and_test() == {"selected_step": 40}  # no test units, nothing loaded
    assert not hasattr(trainer.engine, "loaded")
