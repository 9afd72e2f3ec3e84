"""Parity of ``model.fidelity: reference`` with the paper's own code, run under its pinned stack.

    python benchmarks/reference_parity.py --reference /path/to/gaze_reward-checkout [--venv DIR]

The reference side runs in a virtual environment with the versions the reference's ``requirements.txt``
pins (transformers 4.40, peft 0.10, trl 0.9.6, …; torch is this machine's, which transformers 4.40 runs
on), built once under ``--venv``. It imports ``reward_model_general_sp`` (GazeConcat) and
``reward_model_general_add`` (GazeAdd) from the checkout at run time, with their fixation predictors and
LMDB cache stubbed: the cache the model reads its fixations from is filled with the same precomputed
tensors gazerm gets. Both sides build on one tiny Llama whose weights this script draws from ``--seed``;
what the reference draws itself (the ``<PAD>`` and ``<eye/>`` rows, projector, score head, LoRA) is copied
into gazerm's model. Each case prints ``CASE: max |Δ| = X`` for the rewards of chosen and rejected rows
(trl's separate forwards, last-slot rewards) and for the LoRA and head weights after one SGD step.

``--fixture FILE`` also writes what the CI test (``tests/model/test_reference_parity.py``) needs to
check gazerm against the reference without the venv: the reference's drawn weights, rewards and stepped
weights for one case.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from gazerm.features.base import FEATURE_NAMES, N_FEATURES
from gazerm.model.config import LoraSettings, ModelConfig
from gazerm.model.inputs import InputSpec, SequenceEncoder
from gazerm.model.losses import pairwise_loss
from gazerm.model.pipeline import InputPipeline
from gazerm.model.reward_model import RewardModel, build_reward_model, build_tokenizer
from gazerm.model.tokenizers import build_local_tokenizer

# The reference's pins this harness needs (the rest of its requirements are its training job's).
PINNED = (
    "transformers",
    "peft",
    "trl",
    "tokenizers",
    "numpy",
    "accelerate",
    "safetensors",
    "pyarrow",
    "datasets",
    "rich",
)
TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}
LORA = {"r": 8, "alpha": 32, "target_modules": ["q_proj", "v_proj"]}  # peft's Llama default targets
LR = 0.1
TEXTS = [
    ("How do I bake bread at home?", "Mix flour, water, yeast and salt, then knead.", "The quick brown fox."),
    ("Reading times?", "They grow with word length.", "Eye-tracking measures: fixations, go-past time."),
]
TRT = FEATURE_NAMES.index("TRT")


@dataclass(frozen=True)
class Case:
    fusion: str  # concat (GazeConcat, reward_model_general_sp) or add (GazeAdd, reward_model_general_add)
    version: int  # fmv1 (one TRT value a slot) or fmv2 (five features a slot)

    @property
    def name(self) -> str:
        return f"{self.fusion}-fmv{self.version}"

    @property
    def features_used(self) -> list[int]:
        return [1] * N_FEATURES if self.version == 2 else [int(i == TRT) for i in range(N_FEATURES)]


CASES = [Case(fusion, version) for fusion in ("concat", "add") for version in (1, 2)]


def write_backbone(directory: Path, seed: int) -> None:
    """The tiny Llama both sides start from: a tokenizer without a pad token (as Llama's) and weights
    drawn from ``seed`` by name, so no transformers version's init code decides them."""
    tokenizer = build_local_tokenizer("llama")
    tokenizer.pad_token = None
    tokenizer.save_pretrained(directory)
    # Written so tokenizers 0.19 reads it too: a class name it knows, BPE merges as "a b" strings.
    settings = directory / "tokenizer_config.json"
    settings.write_text(
        json.dumps({**json.loads(settings.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    spec = json.loads((directory / "tokenizer.json").read_text())
    spec["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    config = {**TINY, "vocab_size": len(tokenizer)}
    config |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    (directory / "config.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(seed)
    save_file(
        {name: _draw(shape, generator) for name, shape in _shapes(config).items()},
        directory / "model.safetensors",
        metadata={"format": "pt"},
    )


def _draw(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    values = torch.randn(shape, generator=generator)
    return 1 + 0.1 * values if len(shape) == 1 else 0.05 * values  # norms near 1, matrices small


def _shapes(config: dict) -> dict[str, tuple[int, ...]]:
    hidden, inner, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = hidden // config["num_attention_heads"] * config["num_key_value_heads"]
    shapes = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        shapes |= {
            f"{prefix}self_attn.q_proj.weight": (hidden, hidden),
            f"{prefix}self_attn.k_proj.weight": (kv, hidden),
            f"{prefix}self_attn.v_proj.weight": (kv, hidden),
            f"{prefix}self_attn.o_proj.weight": (hidden, hidden),
            f"{prefix}mlp.gate_proj.weight": (inner, hidden),
            f"{prefix}mlp.up_proj.weight": (inner, hidden),
            f"{prefix}mlp.down_proj.weight": (hidden, inner),
            f"{prefix}input_layernorm.weight": (hidden,),
            f"{prefix}post_attention_layernorm.weight": (hidden,),
        }
    return shapes


def gazerm_model(case: Case, backbone: Path) -> tuple[RewardModel, SequenceEncoder]:
    """gazerm's reference mode on the tiny backbone (dropouts off on both sides: one step must be
    deterministic)."""
    config = ModelConfig(
        backbone=str(backbone),
        fidelity="reference",
        fusion=case.fusion,
        features_used=case.features_used,
        fp_dropout=(0.0, 0.0),
        lora=LoraSettings(
            r=LORA["r"], alpha=LORA["alpha"], dropout=0.0, target_modules=LORA["target_modules"]
        ),
    )
    tokenizer = build_tokenizer(config)
    spec = InputSpec({"predictor": "none"}, max_length=1024)
    return build_reward_model(config, tokenizer), InputPipeline.from_spec(spec, tokenizer, config).encoder


def case_inputs(case: Case, encoder: SequenceEncoder, seed: int) -> dict[str, list]:
    """Token ids of chosen and rejected rows and the fixations the reference's cache hands its forward:
    for concat one value (fmv1) or five (fmv2) per predictor token, as many slots as the predictor's own
    tokenization has (here a random count up to the row's length); for add one per model token."""
    rng = np.random.default_rng(seed)
    tokenizer = encoder.tokenizer
    ids = [tokenizer(f"{prompt} {answer}")["input_ids"] for prompt, *answers in TEXTS for answer in answers]
    ids = ids[0::2] + ids[1::2]  # chosen rows, then rejected rows
    width = 1 if case.version == 1 else N_FEATURES
    slots = [len(row) if case.fusion == "add" else int(rng.integers(3, len(row) + 1)) for row in ids]
    scale = 11.0 if case.version == 1 else 100.0  # the predictors' raw ranges
    fixations = [(rng.random((count, width)) * scale).astype(np.float32) for count in slots]
    return {"ids": ids, "fixations": fixations}


def gazerm_batch(case: Case, encoder: SequenceEncoder, inputs: dict[str, list]):
    """The rows as gazerm's model takes them: concat's slots at the front of each row's gaze (all attended;
    the model packs them there anyway), add's on every token; fmv1's value in the TRT column."""
    items = []
    for row, fixations in zip(inputs["ids"], inputs["fixations"], strict=True):
        gaze = np.zeros((len(row), N_FEATURES), dtype=np.float32)
        columns = [TRT] if case.version == 1 else list(range(N_FEATURES))
        gaze[: len(fixations), columns] = fixations
        mask = np.arange(len(row)) < len(fixations)
        items.append(
            {
                "input_ids": np.asarray(row),
                "gaze": gaze,
                "gaze_mask": mask,
                "response_mask": mask,
                "implicit": None,
            }
        )
    return encoder.pad(items)


def load_reference_weights(model: RewardModel, weights: dict[str, np.ndarray]) -> None:
    """Copy what the reference drew into gazerm's model: its <PAD> row (and <eye/>, </eye> rows as the
    separators), projector and its LayerNorms, score head and LoRA matrices."""
    pad = model.transformer.get_input_embeddings().num_embeddings - 1
    copies = {"value_head.weight": weights["score"]}
    copies |= {
        f"projector.net.{index}.{part}": weights[f"projector.{index}.{part}"]
        for index in (0, 1, 4)
        for part in ("weight", "bias")
    }
    copies |= {f"projector.norm.{part}": weights[f"norm.{part}"] for part in ("weight", "bias")}
    if model.separators is not None:
        copies["separators"] = weights["eye_rows"]
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        model.transformer.get_input_embeddings().weight[pad] = torch.from_numpy(weights["pad_row"])
        for name, value in copies.items():
            parameters[name].copy_(torch.from_numpy(value))
        for name, parameter in parameters.items():
            if "lora_" in name:
                parameter.copy_(torch.from_numpy(weights[_lora_key(name)]))


def _lora_key(name: str) -> str:
    """``…layers.0.self_attn.q_proj.lora_A.default.weight`` → ``lora.0.q_proj.A``."""
    match = re.search(r"layers\.(\d+)\.self_attn\.(\w+)\.lora_(A|B)", name)
    return "lora.{}.{}.{}".format(*match.groups())


def gazerm_side(
    case: Case, backbone: Path, inputs: dict[str, list], weights: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Rewards of gazerm's reference mode, then its LoRA and head weights after one SGD step."""
    model, encoder = gazerm_model(case, backbone)
    load_reference_weights(model, weights)
    batch = gazerm_batch(case, encoder, inputs)
    model.train()
    rewards = model(**batch.forward_kwargs(), groups=2).rewards
    half = len(rewards) // 2
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=LR)
    pairwise_loss(rewards[:half], rewards[half:]).backward()
    optimizer.step()
    stepped = {"score": model.value_head.weight}
    stepped |= {_lora_key(name): p for name, p in model.named_parameters() if "lora_" in name}
    projector = torch.cat([p.detach().flatten() for p in model.projector.parameters()])
    return {
        "rewards": rewards.detach().numpy(),
        "projector": projector.numpy(),
        **{f"stepped/{key}": value.detach().numpy() for key, value in stepped.items()},
    }


def compare(case: Case, reference: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> dict[str, float]:
    """max |Δ| of the rewards and of the stepped weights (and how far the projector moved on each side)."""
    stepped = [key for key in ours if key.startswith("stepped/")]
    return {
        f"{case.name} rewards": float(np.abs(reference["rewards"] - ours["rewards"]).max()),
        f"{case.name} one SGD step (LoRA, head)": max(
            float(np.abs(reference[key] - ours[key]).max()) for key in stepped
        ),
        f"{case.name} projector moved (reference, gazerm)": max(
            float(np.abs(reference["projector_after"] - reference["projector"]).max()),
            float(np.abs(ours["projector"] - reference["projector"]).max()),
        ),
    }


# -- the reference side ----------------------------------------------------------------------------------


def ensure_venv(venv: Path, reference: Path) -> Path:
    """The venv with the reference's pins (built once; ``.gazerm-ready`` marks a finished one)."""
    python = venv / "bin" / "python"
    if (venv / ".gazerm-ready").is_file():
        return python
    pins = {}
    for line in (reference / "requirements.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if name.lower() in PINNED:
            pins[name.lower()] = f"{name}=={version}"
    missing = set(PINNED) - set(pins)
    if missing:
        raise SystemExit(f"{reference}/requirements.txt pins none of {sorted(missing)}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"  # this machine's CPU build; 4.40 runs on it
    subprocess.run([str(python), "-m", "pip", "install", "-q", torch_pin, *pins.values()], check=True)
    (venv / ".gazerm-ready").write_text(json.dumps([torch_pin, *pins.values()]))
    return python


def run_reference(
    python: Path, reference: Path, work: Path, case: Case, inputs: dict[str, list]
) -> dict[str, np.ndarray]:
    """Run ``reference_side.py`` (beside this file) in the venv on ``case``; its outputs as arrays."""
    np.savez(
        work / f"{case.name}-in.npz",
        **{f"ids/{i}": np.asarray(row) for i, row in enumerate(inputs["ids"])},
        **{f"fixations/{i}": value for i, value in enumerate(inputs["fixations"])},
    )
    command = [
        str(python),
        str(Path(__file__).with_name("reference_side.py")),
        str(reference),
        str(work),
        case.fusion,
        str(case.version),
        json.dumps({"lora": LORA, "lr": LR}),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    if result.returncode:
        raise SystemExit(f"the reference side failed on {case.name}:\n{result.stderr[-4000:]}")
    with np.load(work / f"{case.name}-out.npz") as out:
        return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reference", type=Path, required=True, help="a checkout of gaze_reward (a plain directory)"
    )
    parser.add_argument("--venv", type=Path, default=Path("~/.cache/gazerm/reference-venv").expanduser())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixture", type=Path, help="write the CI fixture (case concat-fmv2) here")
    args = parser.parse_args()
    python = ensure_venv(args.venv, args.reference.resolve())
    with tempfile.TemporaryDirectory(prefix="gazerm-parity-") as scratch:
        work = Path(scratch)
        backbone = work / "backbone"
        backbone.mkdir()
        write_backbone(backbone, args.seed)
        worst = 0.0
        for case in CASES:
            _, encoder = gazerm_model(case, backbone)
            inputs = case_inputs(case, encoder, args.seed)
            reference = run_reference(python, args.reference.resolve(), work, case, inputs)
            ours = gazerm_side(
                case,
                backbone,
                inputs,
                {k.removeprefix("init/"): v for k, v in reference.items() if k.startswith("init/")},
            )
            for label, delta in compare(case, reference, ours).items():
                print(f"{label}: max |Δ| = {delta:.3g}")
                worst = max(worst, delta)
            if args.fixture and case == Case("concat", 2):
                np.savez_compressed(args.fixture, seed=args.seed, **reference)
        print(f"worst: max |Δ| = {worst:.3g} ({'within' if worst <= 1e-5 else 'OUTSIDE'} 1e-5)")


if __name__ == "__main__":
    main()
