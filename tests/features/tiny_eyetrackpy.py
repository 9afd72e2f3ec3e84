"""Tiny stand-ins for the paper's predictors, built locally: a RoBERTa-style base directory (config +
byte-level BPE tokenizer), a T5-style tokenizer (Unigram + Metaspace, ``</s>`` appended) and
random-init state dicts in eyetrackpy's layouts, saved the way eyetrackpy publishes them."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, RobertaConfig

from gazerm.features.fmv1 import BiLSTMTokenRegressor
from gazerm.features.fmv2 import RobertaGazeRegressor
from gazerm.model.tokenizers import _BUILTIN_CORPUS

ROBERTA_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0-4, as in roberta-base
T5_SPECIAL = ["<pad>", "</s>", "<unk>"]  # ids 0-2, as in t5-small
# fmv1's embedding has more rows than its tokenizer has tokens (32128 vs 32100 in the real one).
T5_EMBEDDING_ROWS_EXTRA = 7


def save_roberta_base(path: Path) -> Path:
    """A roberta-base stand-in: 1 layer, hidden 32, RoBERTa's 514 positions and special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=ROBERTA_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_BUILTIN_CORPUS, trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    wrapped.save_pretrained(path)
    config = RobertaConfig(
        vocab_size=len(wrapped),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    config.save_pretrained(path)
    return path


def save_fmv2_checkpoint(path: Path, base: Path, bias: list[float] | None = None) -> Path:
    """An fmv2 state dict; with ``bias`` the head ignores the encoder and outputs ``bias`` everywhere,
    else its outputs are random around 1 (mostly positive, so clipping at 0 hides little)."""
    torch.manual_seed(0)
    model = RobertaGazeRegressor(RobertaConfig.from_pretrained(base))
    with torch.no_grad():
        if bias is None:
            model.decoder[0].bias.add_(1.0)
        else:
            model.decoder[0].weight.zero_()
            model.decoder[0].bias.copy_(torch.tensor(bias))
    torch.save(model.state_dict(), path)
    return path


def save_t5_tokenizer(path: Path) -> Path:
    """A t5-small tokenizer stand-in: SentencePiece-style Unigram, ``▁`` word marker, ``</s>`` appended."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=T5_SPECIAL, unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(_BUILTIN_CORPUS, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(path)
    return path


def save_fmv1_checkpoint(path: Path, vocab_size: int, bias: float | None = None) -> Path:
    """An fmv1 state dict (embedding 16, hidden 8); with ``bias`` every token's output is ``bias``, else
    outputs are random around 1."""
    torch.manual_seed(0)
    model = BiLSTMTokenRegressor(vocab_size + T5_EMBEDDING_ROWS_EXTRA, embedding_dim=16, hidden_size=8)
    with torch.no_grad():
        if bias is None:
            model.head[2].bias.add_(1.0)
        else:
            model.head[2].weight.zero_()
            model.head[2].bias.fill_(bias)
    torch.save(model.state_dict(), path)
    return path
