"""The Ray Train worker loop: DeepSpeed ZeRO-2/3 over a reward model, fed units in a seeded order.

Every rank runs this function. Rank 0 also streams metrics to MLflow and posts progress to the driver
(``train.progress``), through a :class:`~gazerm.train.reporting.Reporter`.
Checkpoints are ``train.checkpoints``'; the last one also holds the exported reward model: the last
evaluation's weights or, with ``run.select: best``, the best evaluation's, which then also score the test
split (``test/*``). Each rank reads its own share of the train split (``train.order``: the same sequence of
units for the same seed, so a resumed run continues exactly where it stopped); the validation and test
splits come whole to every rank through the object store.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.train
import torch
import transformers

from gazerm.errors import ConfigError
from gazerm.model.inputs import ModelInputs
from gazerm.model.io import load_weights_into, save_reward_model
from gazerm.model.reward_model import RewardOutput, build_reward_model, build_tokenizer
from gazerm.storage import Storage
from gazerm.train.batch import MicroBatch
from gazerm.train.checkpoints import (
    DEEPSPEED_DIR,
    LISTED,
    MODEL_DIR,
    STATE_FILE,
    CheckpointSink,
    LocalCheckpoints,
    RayTrainCheckpoints,
    complete_checkpoints,
    write_file_list,
)
from gazerm.train.collate import UnitCollator
from gazerm.train.config import TrainJobConfig
from gazerm.train.deepspeed_config import choose_accelerator, deepspeed_config, skip_compiled_ops
from gazerm.train.forwards import fewest_forwards, forward_shapes, slot_budget
from gazerm.train.kinds import LossKind
from gazerm.train.metric_names import overall_metrics, summarize_test
from gazerm.train.metrics import (
    EvalTotals,
    StartupClock,
    StepAverage,
    max_over_ranks,
    peak_memory_gib,
    sum_over_ranks,
)
from gazerm.train.order import EpochPlan, RankStream
from gazerm.train.progress import Event, eval_event, note_event, step_event
from gazerm.train.reporting import Reporter, RunReporter
from gazerm.train.schedule import build_scheduler, schedule_steps
from gazerm.train.worker_entry import SELECT_RANK, LoopSettings, checkpoint_score


@dataclass
class TrainerState:
    """Where training stands; ``micro_in_epoch`` lets a resumed run skip what it already trained on."""

    step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0
    layout: dict[str, Any] = field(default_factory=dict)  # EpochPlan.layout() the run trained under
    best_step: int | None = None  # run.select=best: the evaluation best by run.select_metric so far
    best_value: float | None = None
    best_rank: int = 0  # how many evaluations were the best when they ran: Ray ranks checkpoints by it
    # The val/* of the evaluation run.select picks so far (the best, or the last): a final checkpoint that
    # skips its evaluation reports these, because Ray Tune wants its metric in every result.
    selected_val: dict[str, float] = field(default_factory=dict)


def run_rank(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """One rank's run (``worker_entry.train_loop_per_worker``); ``loop_config`` = {"job": TrainJobConfig as
    dict, "settings": LoopSettings, "board": the driver's progress board, "splits": the validation and test
    units by split name}. Under the local launcher, the final checkpoint's metrics and location."""
    config = TrainJobConfig.model_validate(loop_config["job"])
    settings: LoopSettings = loop_config["settings"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    planned = settings.plan["world_size"]
    if planned != world_size:
        raise RuntimeError(f"planned for {planned} ranks, running on {world_size}")
    choose_accelerator(config.run.use_gpu)
    reporter = None  # rank 0 speaks for the run
    if rank == 0:
        reporter = RunReporter(settings.tracking_uri, settings.run_id, loop_config["board"])
    checkpoints: CheckpointSink = RayTrainCheckpoints()
    if config.run.launcher == "local":
        score = checkpoint_score(config.run.select)
        checkpoints = LocalCheckpoints(
            Storage.of(config.output_dir), config.run.keep_checkpoints, score, rank
        )
    trainer = Trainer(config, settings, rank, reporter, checkpoints)
    # Object references under Ray Train, the tables themselves under the local launcher.
    splits = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in loop_config["splits"].items()}
    trainer.setup(splits)
    trainer.run()
    return checkpoints.final


class Trainer:
    """One rank's training run: built from what it is given (nothing started), ``setup()`` as a
    torchtune recipe does (engine, collator, train stream), then ``run()``: restore, train, evaluate,
    save. ``reporter`` is rank 0's, None on the other ranks; ``checkpoints`` keeps what it saves (Ray
    Train, unless the local launcher's)."""

    def __init__(
        self,
        config: TrainJobConfig,
        settings: LoopSettings,
        rank: int,
        reporter: Reporter | None,
        checkpoints: CheckpointSink | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.rank = rank
        self.reporter = reporter
        self.checkpoints = checkpoints or RayTrainCheckpoints()
        self.state = TrainerState()
        self.accumulated = StepAverage()
        self._tokens = 0  # text tokens this rank trained on since the last logged step
        self._batches: dict[str, list[MicroBatch]] = {}  # collated once per split

    @property
    def kind(self) -> LossKind:
        return self.settings.loss.kind

    @property
    def world_size(self) -> int:
        return self.plan.world_size

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self, splits: dict[str, pa.Table]) -> None:
        """The engine, the collator and this rank's train stream; ``splits``: the validation and test
        units, which every rank scores whole."""
        settings = self.settings
        self.startup = StartupClock(**settings.startup) if settings.startup else StartupClock(time.time())
        self.startup.mark("workers")
        transformers.set_seed(self.config.run.seed)  # Python, NumPy and torch (every device)
        self.plan = EpochPlan.from_dict(settings.plan)  # the schedule's horizon and this rank's stream
        self.tokenizer = build_tokenizer(self.config.model, settings.inputs.template)
        self.engine = self.build_engine()
        self.device = self.engine.device  # every micro-batch goes here before the forward
        self.collator = UnitCollator.for_job(self.config, settings.inputs, settings.loss, self.tokenizer)
        self.train_stream = RankStream(self.plan, self.rank, self.collator)
        self.state = TrainerState(layout=self.plan.layout(self.collator.windows))
        self._split_units = splits

    def build_engine(self) -> Any:
        """The reward model, its optimizer and schedule, wrapped by DeepSpeed (bf16 on GPU, fp32 on CPU)."""
        import deepspeed  # not at module level: DeepSpeed picks its accelerator once, at import

        skip_compiled_ops()
        config = self.config
        ds_config = deepspeed_config(config, bf16=config.run.use_gpu and config.model.precision == "bf16")
        if config.run.zero_stage == 3:
            from transformers.integrations import HfDeepSpeedConfig

            # Kept alive while the model is built: from_pretrained then loads each rank's partition
            # only, instead of every rank holding the full hub checkpoint in memory.
            self._hf_deepspeed = HfDeepSpeedConfig(ds_config)
        model = build_reward_model(config.model, self.tokenizer, lm_head=config.loss.lm_loss_coeff > 0)
        self.startup.mark("model")
        if config.model.init_from:  # ZeRO-2 only (TrainJobConfig checks): the full model is built here
            load_weights_into(model, config.model.init_from)
        if self.kind.shift_invariant:
            model.freeze_head_bias()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.optim.lr,
            betas=config.optim.betas,
            weight_decay=config.optim.weight_decay,
        )
        horizon = schedule_steps(config, self.settings.total_steps, self.plan.units_per_rank)
        scheduler = build_scheduler(optimizer, config, horizon)
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        self.startup.mark("deepspeed")
        return engine

    # -- restore ---------------------------------------------------------------------------------
    def restore(self) -> None:
        """Continue from Ray Train's latest checkpoint (worker-group restart after a failure) or the
        driver's ``resume_from`` (a resubmitted job); either counts as a recovery in MLflow."""
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None and self.settings.resume_from:
            checkpoint = ray.train.Checkpoint(self.settings.resume_from)  # a local path or a URI
        if checkpoint is None:
            return
        with checkpoint.as_directory() as directory:
            self.engine.load_checkpoint(str(Path(directory) / DEEPSPEED_DIR), tag="state")
            saved = json.loads((Path(directory) / STATE_FILE).read_text())
            saved.pop(LISTED, None)
            self.state = TrainerState(**{**saved, "layout": self.state.layout})  # the driver compared them
        recoveries = self.reporter.count("recoveries") if self.reporter is not None else 0
        self._post(
            note_event(f"resumed at step {self.state.step} (epoch {self.state.epoch}), recovery {recoveries}")
        )

    # -- train -----------------------------------------------------------------------------------
    def run(self) -> None:
        self.restore()
        # Collated now, before the train stream's prefetch thread starts tokenizing: one fast tokenizer
        # must not serve two threads at once.
        self._split_batches("validation")
        self.startup.mark("validation")
        run, total = self.config.run, self.settings.total_steps
        started = (time.perf_counter(), self.state.step)
        self._last_logged = started[0]
        with closing(self._steps()) as steps:
            while self.state.step < total:
                micro_batches, (self.state.epoch, self.state.micro_in_epoch) = next(steps)
                self._train_step(micro_batches, started)
                if self.state.step < total and self.state.step % run.eval_every == 0:
                    self.evaluate_and_checkpoint(final=False)
        self.evaluate_and_checkpoint(final=True)

    def _steps(self) -> Iterator[tuple[list[MicroBatch], tuple[int, int]]]:
        """Each optimizer step's ``run.grad_accum`` micro-batches (a step may span epochs) and where the
        stream stands after them: (epoch, micro-batches of it trained)."""
        epoch, trained = self.state.epoch, self.state.micro_in_epoch
        step: list[MicroBatch] = []
        while True:
            for micro in self.train_stream.micro_batches(epoch, skip=trained):
                step.append(micro)
                trained += 1
                if len(step) == self.config.run.grad_accum:
                    yield step, (epoch, trained)
                    step = []
            if trained == 0:
                raise RuntimeError(f"epoch {epoch} gave this rank no micro-batch to train on")
            epoch, trained = epoch + 1, 0

    def _train_step(self, micro_batches: list[MicroBatch], started: tuple[float, int]) -> None:
        """One optimizer step: forward and backward over the step's micro-batches (merged into fewer
        forwards with ``run.merge_micro_batches``); the last forward's ``engine.step()`` updates.

        ``started`` is (time, step) when this attempt began, for an honest rate after a resume.
        """
        self.engine.train()
        forwards = self._merged(micro_batches)
        for index, (micro, holds) in enumerate(forwards):
            self.engine.set_gradient_accumulation_boundary(index == len(forwards) - 1)
            loss, details = self._loss(micro)
            # DeepSpeed's mean over the step's micro-batches (its loss / gas), a merged forward counting
            # for each it holds: unmerged, exactly what DeepSpeed computes itself.
            self.engine.backward(loss / (len(micro_batches) / holds), scale_wrt_gas=False)
            self.engine.step()
            self._tokens += int(micro.inputs.attention_mask.sum())  # on the CPU still: no device sync
            if self.reporter is not None:  # rank 0 logs; the others keep no step metrics
                self.accumulated.add({"train/loss": loss.detach(), **details}, weight=holds)
        self.state.step += 1
        tokens = sum_over_ranks(self._tokens, self.device)  # a collective: every rank takes part
        self._tokens = 0
        if self.reporter is not None:
            self._log_step(started, tokens, len(forwards))

    def _merged(self, micro_batches: list[MicroBatch]) -> list[tuple[MicroBatch, int]]:
        """The step's forwards, each with how many of its micro-batches it holds: one each or, with
        ``run.merge_micro_batches``, merged into the forwards every rank runs alike (``train.forwards``)."""
        if not self.config.run.merge_micro_batches:
            return [(micro, 1) for micro in micro_batches]
        shapes = max_over_ranks(forward_shapes(micro_batches), self.device)  # a collective
        groups = fewest_forwards(shapes, slot_budget(self.config))
        return [(self.collator.merge([micro_batches[i] for i in group]), len(group)) for group in groups]

    def _log_step(self, started: tuple[float, int], tokens: int, forwards: int) -> None:
        """Rank 0's step metrics; ``tokens``: the text tokens every rank trained on in this step, in
        ``forwards`` forward passes each."""
        now = time.perf_counter()
        elapsed = now - started[0]
        metrics = {
            **self.accumulated.pop(),
            "train/lr": self.engine.get_lr()[0],
            "train/tokens": tokens,
            "train/forwards": forwards,  # run.grad_accum, or fewer where micro-batches were merged
            # This step's rate; a step after an evaluation also pays for it.
            "train/tokens_per_s": tokens / (now - self._last_logged),
            "train/peak_memory_gib": peak_memory_gib(self.device),  # rank 0's; the ranks are alike
        }
        grad_norm = self.engine.get_global_grad_norm()  # before clipping; None until DeepSpeed has one
        if grad_norm is not None:
            metrics["train/grad_norm"] = float(grad_norm)
        self._last_logged = now
        first = self.state.step == started[1] + 1  # of this attempt
        if first:
            self.startup.mark("first_step")
            metrics.update(self.startup.metrics())
        self.reporter.log(metrics, self.state.step)
        if first:
            self._post(note_event(self.startup.summary()))
        rate = (self.state.step - started[1]) / elapsed
        self._post(step_event(self.state.step, metrics["train/loss"], metrics["train/tokens_per_s"], rate))

    def _forward(self, inputs: ModelInputs) -> RewardOutput:
        """The engine's forward, with every input on the engine's device first (collate output is on the
        CPU, and Ray moves only plain tensor batches); packed or padded as ``data.packing`` says, pairs
        sharing their prompt as ``model.pair_forward`` says."""
        return self.engine(
            **inputs.to(self.device).forward_kwargs(),
            return_lm_logits=self.config.loss.lm_loss_coeff > 0,
            packed=self.config.data.packing,
            groups=self.kind.forward_groups(self.config.model),
            shared_prefix=self.kind.shares_prefix(self.config.model),
        )

    def _loss(self, micro: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The micro-batch's loss and detached details (tensors: no host sync per micro-batch)."""
        micro = micro.to(self.device)
        return self.kind.loss(self._forward(micro.inputs), micro, self.config.loss)

    # -- evaluate + checkpoint -------------------------------------------------------------------
    def evaluate(self, split: str = "validation") -> dict[str, float]:
        """Metrics over a whole split (``val/*`` or ``test/*``), every example counted exactly once.

        Each rank reads the full (unsplit) split and scores every ``world_size``-th micro-batch;
        ranks with one batch fewer run a dummy forward, because ZeRO-3 forwards are collective.
        """
        micro_batches = self._split_batches(split)
        if not micro_batches:
            return {}
        mine = micro_batches[self.rank :: self.world_size]
        rounds = -(-len(micro_batches) // self.world_size)
        totals = EvalTotals(self.settings.loss, self.config.run.tie_credit)
        self.engine.eval()
        with torch.no_grad():
            for index in range(rounds):
                micro = mine[index] if index < len(mine) else micro_batches[0]
                output = self._forward(micro.inputs)
                if index < len(mine):
                    totals.add(output.rewards, micro.labels, self.config.loss.use_margin)
        return totals.all_reduce().metrics("test" if split == "test" else "val")

    def _split_batches(self, split: str) -> list[MicroBatch]:
        """A split's micro-batches, fetched and collated once: the splits never change during a run."""
        if split not in self._batches:
            self._batches[split] = self.collator.collate(self._split_units[split])
        return self._batches[split]

    def evaluate_and_checkpoint(self, final: bool) -> None:
        """Evaluate and checkpoint; the last step's checkpoint skips the evaluation under ``run.final_eval:
        false`` unless the step is one of every ``run.eval_every``'s, and then reports the ``val/*`` of the
        evaluation ``run.select`` picks (Ray Tune wants its metric in every result)."""
        run = self.config.run
        metrics: dict[str, float] = {"step": self.state.step, "epoch": self.state.epoch}
        rank = -1
        if not final or run.final_eval or self.state.step % run.eval_every == 0:
            evaluated = {k: v for k, v in self.evaluate().items() if k.startswith("val/")}
            metrics.update(evaluated)
            rank = self._track_best(metrics)
            if run.select == "last" or rank >= 0:
                self.state.selected_val = evaluated
            if self.reporter is not None:
                self.reporter.log(evaluated, self.state.step)
                self._post(eval_event(self.state.step, overall_metrics(metrics)))
        else:
            metrics.update(self.state.selected_val)
        if run.select == "best":  # what Ray ranks this checkpoint by (job._checkpoint_config)
            metrics[SELECT_RANK] = rank
        self._report(metrics, final)

    def _track_best(self, metrics: dict[str, float]) -> int:
        """Remember the best evaluation so far (``run.select: best``, ties as ``run.select_ties`` says).
        Returns the rank Ray keeps this evaluation's checkpoint by: one more than the last best's if it is
        the best now, else -1, so Ray keeps the checkpoint this rule picks (ranking by the metric itself,
        Ray would keep the later of two equal scores whatever the rule)."""
        run = self.config.run
        if run.select != "best":
            return -1
        if run.select_metric not in metrics:
            named = sorted(overall_metrics(metrics, "val/"))
            raise ConfigError(f"run.select_metric={run.select_metric!r} is not one of this run's {named}")
        value = metrics[run.select_metric]
        if not run.improves(value, self.state.best_value):
            return -1
        self.state.best_step, self.state.best_value = self.state.step, value
        self.state.best_rank += 1
        return self.state.best_rank

    def _report(self, metrics: dict[str, float], final: bool) -> None:
        with tempfile.TemporaryDirectory(prefix="gazerm-ckpt-") as directory:
            self.engine.save_checkpoint(str(Path(directory) / DEEPSPEED_DIR), tag="state")
            if final:
                metrics = {**metrics, **self._select_and_test()}
                self._save_model(Path(directory) / MODEL_DIR)
            if self.rank == 0:
                (Path(directory) / STATE_FILE).write_text(json.dumps({**asdict(self.state), LISTED: True}))
            write_file_list(Path(directory), self.rank)
            self.checkpoints.report(Path(directory), {**metrics, "final": int(final)})

    def _select_and_test(self) -> dict[str, float]:
        """Put the selected weights in the engine (``run.select: best`` reloads the best evaluation's
        checkpoint unless it is this one) and score the test split with them: ``test/*`` and the step
        the exported model comes from."""
        selected = self.state.step
        if self.config.run.select == "best" and self.state.best_step not in (None, self.state.step):
            selected = self.state.best_step
            found = complete_checkpoints(Storage.of(self.config.output_dir))
            if selected not in found:
                raise RuntimeError(f"the checkpoint of step {selected} (the best evaluation) is gone")
            with ray.train.Checkpoint(found[selected]).as_directory() as directory:
                self.engine.load_checkpoint(str(Path(directory) / DEEPSPEED_DIR), tag="state")
        metrics = {**self.evaluate("test"), "selected_step": selected}
        if self.reporter is not None:
            self.reporter.log(metrics, self.state.step)
            if len(metrics) > 1 or self.config.run.select == "best":
                self._post(note_event(summarize_test(metrics, self.config.run)))
        return metrics

    def _save_model(self, directory: Path) -> None:
        """Export the reward model; ZeRO-3 first gathers the partitioned weights (a collective)."""
        if self.config.run.zero_stage == 3:
            state_dict = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            state_dict = self.engine.module.state_dict()
        if self.rank == 0:
            inputs = self.collator.pipeline.spec  # what every batch of the run was encoded with
            save_reward_model(
                self.engine.module, self.tokenizer, self.config.model, inputs, directory, state_dict
            )

    def _post(self, event: Event) -> None:
        """Show ``event`` on the driver's console, without waiting for it."""
        if self.reporter is not None:
            self.reporter.post(event)
