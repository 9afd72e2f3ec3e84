"""Head-only training on a frozen backbone (``model.frozen``): the value head and the implicit head learn
from each response's pooled features, which the unchanged backbone (and gaze projector) give once.

Why: with nothing below the heads training, a response's pooled features (``RewardModel.pooled_features``:
the backbone's pooled hidden state after gaze fusion) never change, so they are computed once and cached
on disk, keyed by what decides them (the backbone, the fusion settings, the model seed where it draws a
projector or a tiny backbone) and by the response's exact token ids and token-aligned gaze. Every later
run on the same responses — another seed, another cross-validation fold, another head — reads them back:
a table of rows × folds × seeds over a 135M-parameter backbone then costs one forward pass per response
instead of a fine-tuning run per cell. The runs use the units, collation, losses, metrics, selection,
MLflow run and model directory of a Ray Train job, in this process (a few thousand vectors need neither
workers nor DeepSpeed), and the saved model scores like any other: ``gazerm score`` recomputes the same
features.

The cache lives in ``$GAZERM_CACHE_DIR/pooled`` (default ``~/.cache/gazerm/pooled``), one file per model
key; delete the folder to clear it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch
from tqdm import tqdm

from gazerm.cache import cache_dir
from gazerm.errors import ConfigError
from gazerm.model.backbones import resolve_backbone
from gazerm.model.config import ModelConfig
from gazerm.model.inputs import InputSpec, ModelInputs
from gazerm.model.io import save_reward_model
from gazerm.model.reward_model import RewardModel, RewardOutput, build_reward_model, build_tokenizer
from gazerm.train.batch import MicroBatch
from gazerm.train.collate import UnitCollator
from gazerm.train.config import TrainJobConfig
from gazerm.train.kinds import LossSpec
from gazerm.train.metric_names import overall_metrics
from gazerm.train.metrics import EvalTotals, StepAverage
from gazerm.train.schedule import build_scheduler, schedule_steps

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when what a cached vector means changes
SAVE_EVERY_S = 60.0  # the cache file is rewritten whole: often enough to resume, rarely enough to be cheap


def model_key(config: ModelConfig) -> str:
    """What decides a response's pooled features, hashed: the backbone as resolved (a GGUF's dequantised
    copy is named by the file's hash; a local directory's files count by size and modification time; a
    hub name by its name alone, so pin a revision by downloading it to a directory), the tokenizer,
    pooling, attention kernel and every gaze-fusion setting; the seed only where it draws weights the
    features depend on (a projector, a tiny backbone)."""
    fields = config.model_dump(
        mode="json",
        include={"backbone", "tokenizer", "pooling", "attn_implementation", "fusion"},
    )
    if config.is_tiny:
        fields["tiny"] = config.tiny.model_dump()
    else:
        source = Path(resolve_backbone(config.backbone).path)
        fields["backbone_source"] = str(source)
        if source.is_dir():  # a local directory rewritten in place must not serve its old features
            fields["backbone_files"] = sorted(
                (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in source.iterdir() if f.is_file()
            )
    if config.fusion != "none":
        fields |= config.model_dump(mode="json", include={"gaze_layout", "features_used", "fp_hidden"})
    if config.fusion != "none" or config.is_tiny:
        fields["seed"] = config.seed
    fields["cache_version"] = CACHE_VERSION
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def sequence_keys(inputs: ModelInputs, with_gaze: bool) -> list[str]:
    """Per row, a hash of exactly what reaches the backbone: its token ids and, for a model that fuses
    gaze (``with_gaze``), its tokens' gaze."""
    keys = []
    for row in range(inputs.input_ids.shape[0]):
        n = int(inputs.attention_mask[row].sum())
        digest = hashlib.sha256(inputs.input_ids[row, :n].numpy().tobytes())
        if with_gaze:
            mask = inputs.gaze_mask[row, :n]
            digest.update(mask.numpy().tobytes())
            digest.update(inputs.gaze[row, :n][mask].numpy().tobytes())
        keys.append(digest.hexdigest())
    return keys


def feature_device(config: TrainJobConfig) -> torch.device:
    """Where the frozen backbone computes features: this process's GPU with ``run.use_gpu`` (one device;
    ``run.num_workers`` does not apply to an in-process run), else the CPU."""
    if not config.run.use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("run.use_gpu=true, but this process sees no CUDA device to compute features on")
    return torch.device("cuda")


class FeatureCache:
    """Pooled feature vectors by sequence key, for one model key; written whole and atomically."""

    def __init__(self, root: Path, key: str) -> None:
        self.path = root / f"{key}.pt"
        self.vectors: dict[str, torch.Tensor] = (
            torch.load(self.path, weights_only=True) if self.path.is_file() else {}
        )
        self._dirty = False

    def put(self, keys: list[str], vectors: torch.Tensor) -> None:
        for key, vector in zip(keys, vectors.detach().float().cpu(), strict=True):
            self.vectors[key] = vector.clone()
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.path.parent, suffix=".tmp", delete=False) as handle:
            torch.save(self.vectors, handle)
        os.replace(handle.name, self.path)
        self._dirty = False


@dataclass
class FeatureBatch:
    """A micro-batch with its rows' pooled features ``(R, H)`` (None for a model without a text term)."""

    pooled: torch.Tensor | None
    micro: MicroBatch

    def rewards(self, model: RewardModel) -> torch.Tensor:
        inputs = self.micro.inputs
        return model.head_rewards(self.pooled, inputs.implicit, inputs.implicit_mask)


# An evaluation as run.select keeps it: (metric value, step, each head's state dict, its val/* metrics).
Selected = tuple[float, int, list[dict[str, torch.Tensor]], dict[str, float]]


class FrozenTrainer:
    """One head-only run: ``setup()`` builds the model and the split batches (features from the cache or
    computed), ``train()`` fits the heads, evaluates every ``run.eval_every`` steps and returns the metrics
    of the selected evaluation's heads on validation and test."""

    def __init__(
        self, config: TrainJobConfig, splits: dict[str, pa.Table], inputs: InputSpec, loss: LossSpec
    ) -> None:
        self.config = config
        self.splits = splits
        self.inputs = inputs  # what the batches are encoded with and the model is saved with
        self.loss = loss

    def setup(self) -> None:
        config = self.config
        torch.manual_seed(config.run.seed)
        self.tokenizer = build_tokenizer(config.model, self.inputs.template)
        self.model = build_reward_model(config.model, self.tokenizer).eval()
        self.model.requires_grad_(False)
        self.heads = [self.model.value_head] if config.model.text else []
        if self.model.implicit_head is not None:
            self.heads.append(self.model.implicit_head)
        for head in self.heads:
            head.requires_grad_(True)
        if self.loss.kind.shift_invariant:
            self.model.freeze_head_bias()
        collator = UnitCollator.for_job(config, self.inputs, self.loss, self.tokenizer)
        cache = FeatureCache(cache_dir("pooled"), model_key(config.model)) if config.model.text else None
        self.model.to(feature_device(config))  # the backbone's forwards: the only heavy work
        self.batches = {
            name: self._featurize(name, units, collator, cache) for name, units in self.splits.items()
        }
        self.model.to("cpu")  # the heads train on cached vectors, as cheaply here as anywhere

    def _featurize(
        self, split: str, units: pa.Table, collator: UnitCollator, cache: FeatureCache | None
    ) -> list[FeatureBatch]:
        micro_batches = collator.collate(units)
        if cache is None:
            return [FeatureBatch(None, micro) for micro in micro_batches]
        with_gaze = self.config.model.fusion != "none"
        keyed = [(micro, sequence_keys(micro.inputs, with_gaze)) for micro in micro_batches]
        missing = [(micro, keys) for micro, keys in keyed if any(key not in cache.vectors for key in keys)]
        device = next(self.model.parameters()).device
        saved = time.monotonic()
        try:
            for micro, keys in tqdm(
                missing, desc=f"frozen features ({split})", unit=" batches", mininterval=5.0
            ):
                inputs = micro.inputs
                with torch.no_grad():
                    pooled = self.model.pooled_features(
                        *(
                            t.to(device)
                            for t in (inputs.input_ids, inputs.attention_mask, inputs.gaze, inputs.gaze_mask)
                        )
                    )
                cache.put(keys, pooled)
                if time.monotonic() - saved > SAVE_EVERY_S:  # a run cut short keeps most of what it computed
                    cache.save()
                    saved = time.monotonic()
        finally:
            cache.save()
        return [
            FeatureBatch(torch.stack([cache.vectors[key] for key in keys]), micro) for micro, keys in keyed
        ]

    def train(self, log_metrics: Callable[[dict[str, float], int], None]) -> dict[str, float]:
        """Fit the heads; ``log_metrics(metrics, step)`` records each evaluation with the mean training
        metrics since the one before. The returned
        metrics are the selected evaluation's (``val/*``, ``test/*``, ``selected_step``)."""
        run, optim = self.config.run, self.config.optim
        parameters = [p for head in self.heads for p in head.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
        )
        total = run.max_steps or len(self.batches["train"]) * run.epochs // run.grad_accum
        if total == 0:
            raise ConfigError("the train split gives no step of this batch configuration")
        units = sum(batch.micro.labels.num_units for batch in self.batches["train"])
        scheduler = build_scheduler(optimizer, self.config, schedule_steps(self.config, total, units))
        best: Selected | None = None
        trained = StepAverage()  # logged with each evaluation: a step takes less than an MLflow call
        step = 0
        for micro_index, batch in enumerate(self._train_order()):
            self._set_train(True)
            output = RewardOutput(batch.rewards(self.model))
            loss, details = self.loss.kind.loss(output, batch.micro, self.config.loss)
            (loss / run.grad_accum).backward()
            trained.add({"train/loss": loss.detach(), **details})
            if (micro_index + 1) % run.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(parameters, optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % run.eval_every == 0 or (step == total and run.final_eval):
                metrics = self.evaluate("validation")
                log_metrics({**trained.pop(), **metrics}, step)
                best = self._better(best, metrics, step)
            if step == total:
                break
        if best is None or (run.select == "last" and best[1] != step):
            # The last step not evaluated (run.final_eval: false): its heads, as a Ray Train job exports,
            # with the last evaluation's val/* (if any) as that job reports
            best = self._selected(0.0, step, best[3] if best else {})
        _, selected, state, validation = best
        for head, saved in zip(self.heads, state, strict=True):
            head.load_state_dict(saved)
        return {**validation, **self.evaluate("test"), "selected_step": selected}

    def _train_order(self) -> Iterator[FeatureBatch]:
        """Epoch after epoch, the train micro-batches in a seeded order."""
        batches, generator = self.batches["train"], random.Random(self.config.run.seed)
        while True:
            order = list(range(len(batches)))
            generator.shuffle(order)
            yield from (batches[index] for index in order)

    def _better(self, best: Selected | None, metrics: dict[str, float], step: int) -> Selected:
        """The best evaluation so far (``run.select``: the last, or the best by ``select_metric``, a tie
        going where ``run.select_ties`` says, as in a Ray Train job)."""
        run = self.config.run
        if run.select == "best" and run.select_metric not in metrics:
            named = sorted(overall_metrics(metrics, "val/"))
            raise ConfigError(f"run.select_metric={run.select_metric!r} is not one of this run's {named}")
        value = metrics.get(run.select_metric, 0.0)
        if best is not None and run.select == "best" and not run.improves(value, best[0]):
            return best
        return self._selected(value, step, metrics)

    def _selected(self, value: float, step: int, metrics: dict[str, float]) -> Selected:
        return value, step, [copy.deepcopy(head.state_dict()) for head in self.heads], metrics

    def evaluate(self, split: str) -> dict[str, float]:
        totals = EvalTotals(self.loss, self.config.run.tie_credit)
        self._set_train(False)
        with torch.no_grad():
            for batch in self.batches.get(split, []):
                totals.add(batch.rewards(self.model), batch.micro.labels, self.config.loss.use_margin)
        return totals.metrics("test" if split == "test" else "val")

    def _set_train(self, mode: bool) -> None:
        for head in self.heads:
            head.train(mode)

    def save(self, directory: Path) -> None:
        save_reward_model(self.model, self.tokenizer, self.config.model, self.inputs, directory)
