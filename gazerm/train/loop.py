"""The Ray Train worker loop: DeepSpeed ZeRO-2/3 over a reward model fed by Ray Data shards.

Every rank runs this function. Rank 0 also streams metrics to MLflow and prints progress.
Checkpoints hold the DeepSpeed state (all ranks' ZeRO partitions) and a ``trainer_state.json``;
the last one also holds the exported reward model under ``model/``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gazerm.train.config import TrainJobConfig
from gazerm.train.metrics import StepAverage

log = logging.getLogger("gazerm.train")

STATE_FILE = "trainer_state.json"
DEEPSPEED_DIR = "deepspeed"
MODEL_DIR = "model"


@dataclass
class TrainerState:
    """Where training stands; ``micro_in_epoch`` lets a resumed run skip what it already trained on."""

    step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0


@dataclass(frozen=True)
class LoopSettings:
    """What the driver works out for the workers: schedule length and where to track."""

    total_steps: int
    tracking_uri: str
    run_id: str
    resume_from: str | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainJobConfig, total_steps: int):
    from transformers.optimization import (
        get_constant_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    optim = config.optim
    warmup = int(optim.warmup_ratio * total_steps)
    if optim.scheduler == "cosine":
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, warmup, total_steps, min_lr_rate=optim.min_lr_ratio
        )
    if optim.scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point; ``loop_config`` = {"job": TrainJobConfig as dict, "settings": LoopSettings}."""
    config = TrainJobConfig.model_validate(loop_config["job"])
    settings = LoopSettings(**loop_config["settings"])
    # Must be set before DeepSpeed is imported: it picks its accelerator once, at import.
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if config.run.use_gpu else "cpu")
    Trainer(config, settings).run()


class Trainer:
    """One rank's training run; the methods follow its life: build, restore, train, evaluate, save."""

    def __init__(self, config: TrainJobConfig, settings: LoopSettings) -> None:
        import deepspeed
        import ray.train

        from gazerm.model.reward_model import build_reward_model, build_tokenizer
        from gazerm.runtime import quiet_ray_data
        from gazerm.train.collate import UnitCollator
        from gazerm.train.deepspeed_config import deepspeed_config

        quiet_ray_data()
        self.config = config
        self.settings = settings
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        seed_everything(config.run.seed)
        ds_config = deepspeed_config(config, bf16=config.run.use_gpu)
        if config.run.zero_stage == 3:
            from transformers.integrations import HfDeepSpeedConfig

            # Kept alive while the model is built: from_pretrained then loads each rank's partition
            # only, instead of every rank holding the full hub checkpoint in memory.
            self._hf_deepspeed = HfDeepSpeedConfig(ds_config)
        self.tokenizer = build_tokenizer(config.model)
        model = build_reward_model(config.model, self.tokenizer, lm_head=config.loss.lm_loss_coeff > 0)
        if config.model.init_from:  # ZeRO-2 only (TrainJobConfig checks): the full model is built here
            from gazerm.model.io import load_weights_into

            load_weights_into(model, config.model.init_from)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.optim.lr,
            betas=config.optim.betas,
            weight_decay=config.optim.weight_decay,
        )
        scheduler = build_scheduler(optimizer, config, settings.total_steps)
        self.engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=ds_config,
        )
        self.collator = UnitCollator(
            self.tokenizer, config.data.max_length, config.run.micro_batch_size, config.loss.kind
        )
        self.state = TrainerState()
        self.accumulated = StepAverage()
        self._validation: list[dict[str, Any]] | None = None
        self.metrics_logger = None
        if self.rank == 0:
            from gazerm.track.mlflow_tracking import MetricLogger

            self.metrics_logger = MetricLogger(settings.tracking_uri, settings.run_id)

    # -- restore ---------------------------------------------------------------------------------
    def restore(self) -> None:
        """Continue from Ray Train's latest checkpoint (worker restart) or the driver's ``resume_from``."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None and self.settings.resume_from:
            checkpoint = ray.train.Checkpoint(self.settings.resume_from)  # a local path or a URI
        if checkpoint is None:
            return
        with checkpoint.as_directory() as directory:
            self.engine.load_checkpoint(str(Path(directory) / DEEPSPEED_DIR), tag="state")
            self.state = TrainerState(**json.loads((Path(directory) / STATE_FILE).read_text()))
        self._print(f"resumed at step {self.state.step} (epoch {self.state.epoch})")

    # -- train -----------------------------------------------------------------------------------
    def run(self) -> None:
        import ray.train

        self.restore()
        run, total = self.config.run, self.settings.total_steps
        shard = ray.train.get_dataset_shard("train")
        window = run.micro_batch_size * self.config.data.bucket_window
        started = (time.perf_counter(), self.state.step)
        while self.state.step < total:
            seen = 0
            for micro_batches in shard.iter_torch_batches(batch_size=window, collate_fn=self.collator):
                for micro in micro_batches:
                    seen += 1
                    if seen <= self.state.micro_in_epoch:
                        continue  # trained on before the restart
                    stepped = self._train_micro_batch(micro, started)
                    self.state.micro_in_epoch = seen
                    if self.state.step >= total:
                        break
                    if stepped and self.state.step % run.eval_every == 0:
                        self.evaluate_and_checkpoint(final=False)
                if self.state.step >= total:
                    break
            if seen == 0:
                raise RuntimeError("this worker's training shard is empty: too few examples for the workers")
            if self.state.step < total:
                self.state.epoch += 1
                self.state.micro_in_epoch = 0
        self.evaluate_and_checkpoint(final=True)

    def _train_micro_batch(self, micro: dict[str, Any], started: tuple[float, int]) -> bool:
        """Forward, backward and (at an accumulation boundary) an optimizer step; True if it stepped.

        ``started`` is (time, step) when this attempt began, for an honest steps/s after a resume.
        """
        self.engine.train()
        boundary = self.engine.is_gradient_accumulation_boundary()
        loss, details = self._loss(micro)
        self.engine.backward(loss)
        self.engine.step()
        self.accumulated.add({"train/loss": loss.item(), **details})
        if not boundary:
            return False
        self.state.step += 1
        metrics = {**self.accumulated.pop(), "train/lr": self.engine.get_lr()[0]}
        if self.metrics_logger:
            self.metrics_logger.log(metrics, self.state.step)
            if self.state.step % 10 == 0 or self.state.step == 1:
                rate = (self.state.step - started[1]) / (time.perf_counter() - started[0])
                self._print(
                    f"step {self.state.step}/{self.settings.total_steps} loss {metrics['train/loss']:.4f} "
                    f"({rate:.2f} steps/s)"
                )
        return True

    def _forward(self, micro: dict[str, Any]):
        return self.engine(
            input_ids=micro["input_ids"],
            attention_mask=micro["attention_mask"],
            gaze=micro["gaze"],
            gaze_mask=micro["gaze_mask"],
            return_lm_logits=self.config.loss.lm_loss_coeff > 0,
            implicit=micro["implicit"],
            implicit_mask=micro["implicit_mask"],
        )

    def _loss(self, micro: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        from gazerm.model.losses import list_scores, listwise_loss, lm_loss, pairwise_loss, regression_loss

        loss_config = self.config.loss
        output = self._forward(micro)
        if loss_config.kind == "regression":
            return regression_loss(output.rewards, micro["targets"].view_as(output.rewards)), {}
        if loss_config.kind == "listwise":
            scores, mask = list_scores(output.rewards, micro["list_index"])
            return listwise_loss(scores, micro["tiers"], mask), {}
        half = len(micro["sources"])
        chosen, rejected = output.rewards[:half], output.rewards[half:]
        loss = pairwise_loss(chosen, rejected, micro["margin"] if loss_config.use_margin else None)
        details = {"train/accuracy": (chosen > rejected).float().mean().item()}
        if loss_config.lm_loss_coeff > 0:
            language = lm_loss(
                output.lm_logits[:half], micro["input_ids"][:half], micro["response_mask"][:half]
            )
            details["train/lm_loss"] = language.item()
            loss = loss + loss_config.lm_loss_coeff * language
        return loss, details

    # -- evaluate + checkpoint -------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Validation metrics over the whole validation split, every example counted exactly once.

        Each rank reads the full (unsplit) split and scores every ``world_size``-th micro-batch;
        ranks with one batch fewer run a dummy forward, because ZeRO-3 forwards are collective.
        """
        from gazerm.train.metrics import EvalTotals

        micro_batches = self._validation_batches()
        mine = micro_batches[self.rank :: self.world_size]
        rounds = -(-len(micro_batches) // self.world_size)
        totals = EvalTotals(self.config.loss.kind)
        self.engine.eval()
        with torch.no_grad():
            for index in range(rounds):
                micro = mine[index] if index < len(mine) else micro_batches[0]
                output = self._forward(micro)
                if index < len(mine):
                    totals.add(output.rewards, micro, self.config.loss.use_margin)
        return totals.all_reduce().metrics()

    def _validation_batches(self) -> list[dict[str, Any]]:
        """The validation micro-batches, read and collated once: the split never changes during a run,
        and re-running its Ray Data pipeline at every evaluation costs more than scoring it."""
        import ray.train

        if self._validation is None:
            windows = ray.train.get_dataset_shard("validation").iter_torch_batches(
                batch_size=self.config.run.micro_batch_size * self.config.data.bucket_window,
                collate_fn=self.collator,
            )
            self._validation = [micro for window in windows for micro in window]
        return self._validation

    def evaluate_and_checkpoint(self, final: bool) -> None:
        metrics = {**self.evaluate(), "step": self.state.step, "epoch": self.state.epoch}
        if self.metrics_logger:
            self.metrics_logger.log(
                {k: v for k, v in metrics.items() if k.startswith("val/")}, self.state.step
            )
            shown = {k: round(v, 4) for k, v in metrics.items() if k.count("/") == 1}
            self._print(f"eval at step {self.state.step}: {shown}")
        self._report(metrics, final)

    def _report(self, metrics: dict[str, float], final: bool) -> None:
        import ray.train

        with tempfile.TemporaryDirectory(prefix="gazerm-ckpt-") as directory:
            self.engine.save_checkpoint(str(Path(directory) / DEEPSPEED_DIR), tag="state")
            if final:
                self._save_model(Path(directory) / MODEL_DIR)
            if self.rank == 0:
                (Path(directory) / STATE_FILE).write_text(json.dumps(asdict(self.state)))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report({**metrics, "final": int(final)}, checkpoint=checkpoint)

    def _save_model(self, directory: Path) -> None:
        """Export the reward model; ZeRO-3 first gathers the partitioned weights (a collective)."""
        from gazerm.model.io import save_reward_model

        if self.config.run.zero_stage == 3:
            state_dict = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            state_dict = self.engine.module.state_dict()
        if self.rank == 0:
            save_reward_model(self.engine.module, self.tokenizer, self.config.model, directory, state_dict)

    def _print(self, message: str) -> None:
        if self.rank == 0:
            print(f"[gazerm] {message}", flush=True)
