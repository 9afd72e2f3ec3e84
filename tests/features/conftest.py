"""A tiny token-regression checkpoint saved locally, standing in for the paper's RoBERTa predictors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForTokenClassification

from gazerm.features.base import FEATURE_SCALES
from gazerm.model.tokenizers import build_local_tokenizer

# Classifier bias of the "constant" checkpoint, in raw units: it predicts
# nFix=2 fixations, FFD=200 ms, GPT=400 ms, TRT=300 ms and a negative fixProp (clipped to 0).
CONSTANT_BIAS = [2.0, 200.0, 400.0, 300.0, -1.0]


def save_checkpoint(path: Path, constant: bool) -> Path:
    tokenizer = build_local_tokenizer("bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=5,
    )
    model = BertForTokenClassification(config)
    if constant:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(CONSTANT_BIAS))
        model.config.gaze_output_scale = FEATURE_SCALES.tolist()  # outputs in raw units
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("random-gaze-bert"), constant=False)


@pytest.fixture(scope="session")
def constant_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("constant-gaze-bert"), constant=True)


# The paper's predictors (eyetrackpy's fmv1 and fmv2), tiny and random-init; see tiny_eyetrackpy.
# fmv2's constant head, in CMCL-2021 units (0-100): a negative fixProp is clipped to 0.
FMV2_BIAS = [2.0, 20.0, 40.0, 30.0, -5.0]
# fmv1's constant head: TRT bin 5.5 of 0-11.
FMV1_BIAS = 5.5


@pytest.fixture(scope="session")
def roberta_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.features.tiny_eyetrackpy import save_roberta_base

    return save_roberta_base(tmp_path_factory.mktemp("roberta-base"))


@pytest.fixture(scope="session")
def fmv2_random(tmp_path_factory: pytest.TempPathFactory, roberta_base: Path) -> Path:
    from tests.features.tiny_eyetrackpy import save_fmv2_checkpoint

    return save_fmv2_checkpoint(tmp_path_factory.mktemp("fmv2") / "model.pth", roberta_base)


@pytest.fixture(scope="session")
def fmv2_constant(tmp_path_factory: pytest.TempPathFactory, roberta_base: Path) -> Path:
    from tests.features.tiny_eyetrackpy import save_fmv2_checkpoint

    return save_fmv2_checkpoint(tmp_path_factory.mktemp("fmv2") / "constant.pth", roberta_base, FMV2_BIAS)


@pytest.fixture(scope="session")
def t5_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.features.tiny_eyetrackpy import save_t5_tokenizer

    return save_t5_tokenizer(tmp_path_factory.mktemp("t5-small"))


def _t5_vocab(t5_base: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(t5_base))


@pytest.fixture(scope="session")
def fmv1_random(tmp_path_factory: pytest.TempPathFactory, t5_base: Path) -> Path:
    from tests.features.tiny_eyetrackpy import save_fmv1_checkpoint

    path = tmp_path_factory.mktemp("fmv1") / "T5-tokenizer-BiLSTM-TRT-12-concat-3"
    return save_fmv1_checkpoint(path, _t5_vocab(t5_base))


@pytest.fixture(scope="session")
def fmv1_constant(tmp_path_factory: pytest.TempPathFactory, t5_base: Path) -> Path:
    from tests.features.tiny_eyetrackpy import save_fmv1_checkpoint

    return save_fmv1_checkpoint(tmp_path_factory.mktemp("fmv1") / "constant", _t5_vocab(t5_base), FMV1_BIAS)
