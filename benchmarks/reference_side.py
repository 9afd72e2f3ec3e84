"""The reference side of ``reference_parity.py``, run in the venv with the reference's pins, not gazerm's.

    python reference_side.py REFERENCE_CHECKOUT WORK_DIR {concat|add} {1|2} OPTIONS_JSON

Builds the reference's GazeConcat (``reward_model_general_sp``) or GazeAdd (``reward_model_general_add``)
from the checkout on ``WORK_DIR/backbone``, wraps it as its trainer does (peft SEQ_CLS LoRA), scores the
rows of ``WORK_DIR/<case>-in.npz`` with trl 0.9.6's ``RewardTrainer.compute_loss`` (chosen and rejected
padded and run apart) and takes one SGD step (its update is the gradient itself, which an Adam first step,
±lr, hides). Its fixation predictors are stubbed and its LMDB fixation cache holds the given fixations,
so its forward reads exactly those. Writes ``WORK_DIR/<case>-out.npz``: what it drew (``init/…``), rewards,
the projector before and after, the stepped LoRA and score weights.
"""

import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import torch

reference, work = Path(sys.argv[1]), Path(sys.argv[2])
fusion, version, options = sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
case = f"{fusion}-fmv{version}"

_to = torch.Tensor.to


def _cpu_to(self, *args, **kwargs):
    """The reference moves tensors to "cuda" by name; this machine has none."""
    args = tuple("cpu" if arg == "cuda" else arg for arg in args)
    if kwargs.get("device") == "cuda":
        kwargs["device"] = "cpu"
    return _to(self, *args, **kwargs)


torch.Tensor.to = _cpu_to

STORE = {}  # the fixation cache the reference's compute_fixations_cached reads


class CacheStub:
    def __init__(self, *args, **kwargs):
        pass

    def getItem(self, key):
        return STORE.get(key)

    def add(self, key, value):
        raise RuntimeError(f"fixation cache miss for {key}: the stub holds only the given rows")


class PredictorStub:
    """Stands in for eyetrackpy's predictors: their fixations come from the cache."""

    def __init__(self, *args, **kwargs):
        pass


def _stub(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module


_stub("utils")
_stub("utils.lmdb_storage", LMDBStorage=CacheStub)
predictors = "eyetrackpy.data_generator.fixations_predictor_trained_{0}"
for package in ("eyetrackpy", "eyetrackpy.data_generator", predictors.format(1), predictors.format(2)):
    _stub(package)
_stub(predictors.format(1) + ".fixations_predictor_model_1", FixationsPredictor_1=PredictorStub)
_stub(predictors.format(2) + ".fixations_predictor_model_2", FixationsPredictor_2=PredictorStub)
sys.path[:0] = [str(reference), str(reference / "rlhf_rw" / "models")]

from peft import LoraConfig, TaskType, get_peft_model  # noqa: E402
from transformers import LlamaForSequenceClassification  # noqa: E402
from trl import RewardTrainer  # noqa: E402
from trl.trainer.utils import RewardDataCollatorWithPadding  # noqa: E402

if fusion == "concat":
    from reward_model_general_sp import create_dynamic_class_RewardConcatenate as make_class
else:
    from reward_model_general_add import create_dynamic_class_RewardAdd as make_class

torch.manual_seed(0)
backbone = str(work / "backbone")
model = make_class(LlamaForSequenceClassification)(
    model_name=backbone, fixations_model_version=version, fp_dropout=[0.0, 0.0], features_used=[1] * 5
)
tokenizer = model.tokenizer
embeddings = model.model.embed_tokens.weight.detach()
drawn = {"pad_row": embeddings[tokenizer.pad_token_id], "score": model.score.weight.detach()}
if fusion == "concat":
    drawn["eye_rows"] = embeddings[model.concat_tokens_ids]
for index in (0, 1, 4):
    for part in ("weight", "bias"):
        drawn[f"projector.{index}.{part}"] = getattr(
            model.fixations_embedding_projector[index], part
        ).detach()
drawn |= {f"norm.{part}": getattr(model.norm_layer_fix, part).detach() for part in ("weight", "bias")}
lora = options["lora"]
# The trainer's LoraConfig, its dropout 0 so one step is deterministic; its default targets (q, v).
peft_model = get_peft_model(
    model,
    LoraConfig(
        task_type=TaskType.SEQ_CLS,
        inference_mode=False,
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=0.0,
    ),
)


def projector_values():
    parameters = [*model.fixations_embedding_projector.parameters(), *model.norm_layer_fix.parameters()]
    return torch.cat([p.detach().flatten() for p in parameters]).clone()


def lora_weights():
    found = {}
    for name, parameter in peft_model.named_parameters():
        match = re.search(r"layers\.(\d+)\.self_attn\.(\w+)\.lora_(A|B)", name)
        if match:
            found["lora.{}.{}.{}".format(*match.groups())] = parameter.detach().clone()
    return found


drawn |= lora_weights()
with np.load(work / f"{case}-in.npz") as given:
    rows = [given[f"ids/{i}"].tolist() for i in range(len(given.files) // 2)]
    fixations = [torch.from_numpy(given[f"fixations/{i}"]) for i in range(len(rows))]
for row, values in zip(rows, fixations, strict=True):
    key = row + [version] + (["remap"] if fusion == "add" else []) + [model.model_name]
    values = values.unsqueeze(0) if version == 2 else values.T  # fmv1: (1, slots), fmv2: (1, slots, 5)
    STORE[model.hash_value(key)] = {
        "fixations": values,
        "fixations_attention_mask": torch.ones(1, values.shape[1]),
    }

half = len(rows) // 2
collate = RewardDataCollatorWithPadding(tokenizer=tokenizer)
batch = collate(
    [
        {
            "input_ids_chosen": chosen,
            "attention_mask_chosen": [1] * len(chosen),
            "input_ids_rejected": rejected,
            "attention_mask_rejected": [1] * len(rejected),
        }
        for chosen, rejected in zip(rows[:half], rows[half:], strict=True)
    ]
)
before = projector_values()
peft_model.train()
trainer = types.SimpleNamespace(use_reward_data_collator=True)
loss, outputs = RewardTrainer.compute_loss(trainer, peft_model, batch, return_outputs=True)
rewards = torch.cat([outputs["rewards_chosen"], outputs["rewards_rejected"]]).squeeze(-1)
optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=options["lr"])
loss.backward()
optimizer.step()
stepped = {"score": model.score.modules_to_save["default"].weight.detach(), **lora_weights()}
np.savez(
    work / f"{case}-out.npz",
    rewards=rewards.detach().numpy(),
    projector=before.numpy(),
    projector_after=projector_values().numpy(),
    **{f"init/{key}": value.numpy() for key, value in drawn.items()},
    **{f"stepped/{key}": value.numpy() for key, value in stepped.items()},
)
