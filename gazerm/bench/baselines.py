"""The two baselines of ``gazerm bench train``, each run in its own process (``python -m
gazerm.bench.baselines SPEC OUT``) so its peak memory is its own:

- ``trl``: TRL's ``RewardTrainer`` on the pre-tokenized pairs (``chosen_ids``/``rejected_ids``), LoRA
  through its ``peft_config``;
- ``plain``: a single-process PyTorch loop doing the same forward/backward: chosen and rejected rows
  of ``micro_batch`` pairs in one padded batch, Bradley-Terry loss, gradients accumulated over the
  step's ``pairs_per_step`` pairs, AdamW, gradient clipping.

Both train a transformers ``*ForSequenceClassification`` of the benchmark's backbone with gazerm's
LoRA settings, a constant learning rate and no gradient checkpointing, and write the wall-clock time
and real (unpadded) tokens of every optimizer step, the process's peak memory and the backbone's
parameter count as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from gazerm.model.backbones import resolve_backbone
from gazerm.model.config import ModelConfig
from gazerm.model.reward_model import build_reward_model, build_tokenizer
from gazerm.train.metrics import peak_memory_gib

Pair = tuple[list[int], list[int]]


class StepClock:
    """Each optimizer step's end (wall clock, comparable across processes) and its real tokens."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[int] = []

    def tick(self, tokens: int) -> None:
        self.times.append(time.time())
        self.tokens.append(tokens)


def sequence_classifier(model: ModelConfig, tokenizer: Any) -> PreTrainedModel:
    """The benchmark backbone with a one-output classification head: a tiny backbone is gazerm's own
    seeded one (same weights), a real one is loaded the way gazerm loads it."""
    if model.is_tiny:
        backbone = build_reward_model(model.model_copy(update={"lora": None}), tokenizer).hf_model
        backbone.config.num_labels = 1
        classifier = AutoModelForSequenceClassification.from_config(backbone.config)
        classifier.base_model.load_state_dict(backbone.state_dict())
    else:
        source = resolve_backbone(model.backbone)
        classifier = AutoModelForSequenceClassification.from_pretrained(
            source.path, num_labels=1, attn_implementation=model.attn_implementation
        )
    classifier.config.pad_token_id = tokenizer.pad_token_id
    return classifier


def lora_config(model: ModelConfig) -> LoraConfig:
    lora = model.lora
    return LoraConfig(
        task_type="SEQ_CLS",  # the score head trains with the adapters, as gazerm's value head does
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )


def pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(N, T)`` ids and attention mask."""
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def run_plain(
    spec: dict[str, Any], pairs: list[Pair], classifier: PreTrainedModel, pad_id: int, clock: StepClock
) -> None:
    device = torch.device("cuda" if spec["gpu"] else "cpu")
    model = get_peft_model(classifier, lora_config(ModelConfig(**spec["model"]))).to(device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec["lr"], weight_decay=0.0)
    per_step, micro = spec["pairs_per_step"], spec["micro_batch"]
    order = np.random.default_rng(spec["seed"]).permutation(len(pairs))
    for step in range(spec["steps"]):
        batch = [pairs[i] for i in order[step * per_step : (step + 1) * per_step]]
        tokens = 0
        for start in range(0, per_step, micro):
            chunk = batch[start : start + micro]
            input_ids, mask = pad([c for c, _ in chunk] + [r for _, r in chunk], pad_id)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["gpu"]):
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            rewards = logits.squeeze(-1).float()
            margin = rewards[: len(chunk)] - rewards[len(chunk) :]
            loss = -torch.nn.functional.logsigmoid(margin).mean() * len(chunk) / per_step
            loss.backward()
            tokens += int(mask.sum())
        torch.nn.utils.clip_grad_norm_(trainable, spec["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # wait for the device, so the step's time is its own
        clock.tick(tokens)


def run_trl(
    spec: dict[str, Any], pairs: list[Pair], classifier: PreTrainedModel, tokenizer: Any, clock: StepClock
) -> None:
    import tempfile

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            total = trainer._total_train_tokens  # RewardTrainer's count of unpadded tokens trained on
            clock.tick(total - sum(clock.tokens))

    with tempfile.TemporaryDirectory(prefix="gazerm-bench-trl-") as output_dir:
        args = RewardConfig(
            output_dir=output_dir,
            per_device_train_batch_size=spec["micro_batch"],
            gradient_accumulation_steps=spec["pairs_per_step"] // spec["micro_batch"],
            max_steps=spec["steps"],
            learning_rate=spec["lr"],
            lr_scheduler_type="constant",
            weight_decay=0.0,
            max_grad_norm=spec["max_grad_norm"],
            seed=spec["seed"],
            use_cpu=not spec["gpu"],
            bf16=spec["gpu"],
            gradient_checkpointing=False,  # TRL's default is on; gazerm's and the plain loop's are off
            disable_dropout=False,  # keep LoRA dropout, as the other two do
            max_length=None,  # every pair fits: nothing to filter
            save_strategy="no",
            report_to="none",
            logging_steps=spec["steps"],
            disable_tqdm=True,
        )
        dataset = Dataset.from_dict(
            {"chosen_ids": [c for c, _ in pairs], "rejected_ids": [r for _, r in pairs]}
        )
        trainer = RewardTrainer(
            model=classifier,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(ModelConfig(**spec["model"])),
            callbacks=[Clock()],
        )
        trainer.train()


def main(spec_path: str, out_path: str) -> None:
    clock = StepClock()
    spec = json.loads(Path(spec_path).read_text())
    pairs = [(chosen, rejected) for chosen, rejected in json.loads(Path(spec["pairs"]).read_text())]
    model = ModelConfig(**spec["model"])
    torch.manual_seed(spec["seed"])
    tokenizer = build_tokenizer(model)
    classifier = sequence_classifier(model, tokenizer)
    parameters = sum(p.numel() for p in classifier.base_model.parameters())
    if spec["system"] == "trl":
        run_trl(spec, pairs, classifier, tokenizer, clock)
    else:
        run_plain(spec, pairs, classifier, tokenizer.pad_token_id, clock)
    result = {
        "step_times": clock.times,
        "step_tokens": clock.tokens,
        "peak_memory_gib": peak_memory_gib(torch.device("cuda" if spec["gpu"] else "cpu")),
        "processes": 1,
        "parameters": parameters,
    }
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
