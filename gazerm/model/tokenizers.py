"""Small fast tokenizers trained locally, so tests and the quickstart job never download one.

``llama`` mimics Llama/Mistral tokenizers (byte-level BPE, ``<s>``/``</s>``, BOS prepended);
``bert`` mimics BERT (lower-cased WordPiece, ``[CLS] … [SEP]``). Both are fast tokenizers,
so they return character offsets just like the hub tokenizers they stand in for.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

TokenizerStyle = Literal["llama", "bert"]

_BUILTIN_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Human: How do I bake bread at home? Assistant: Mix flour, water, yeast and salt, then knead.",
    "Reading times grow with word length and shrink with word frequency.",
    "Eye-tracking measures: fixations, first fixation duration, go-past time, total reading time.",
    string.ascii_letters + string.digits + string.punctuation,
]


def build_local_tokenizer(
    style: TokenizerStyle = "llama", corpus: Iterable[str] | None = None, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """Train a tokenizer of the given style on ``corpus`` (a built-in one by default); deterministic."""
    texts = list(corpus) if corpus is not None else _BUILTIN_CORPUS
    if style == "llama":
        return _llama_style(texts, vocab_size)
    if style == "bert":
        return _bert_style(texts, vocab_size)
    raise ValueError(f"unknown tokenizer style {style!r}; expected 'llama' or 'bert'")


def _llama_style(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    special = ["<unk>", "<s>", "</s>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]),
        ]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    wrapped.padding_side = "right"
    return wrapped


def _bert_style(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = _bpe_pieces(texts, (vocab_size - len(special)) // 2)
    tokens = dict.fromkeys([*special, *pieces, *(f"##{piece}" for piece in pieces)])
    tokenizer = _bert_pipeline(
        Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    )
    tokenizer.decoder = decoders.WordPiece()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _bpe_pieces(texts: list[str], size: int) -> list[str]:
    """Sub-word pieces learnt by plain BPE on BERT-normalised words, in the order BPE numbered them.

    Not ``WordPieceTrainer``: it numbers the ``##`` pieces in hash-map order, so ties between equally
    frequent merges break differently on every build (huggingface/tokenizers#1794). Plain BPE numbers
    every symbol from its sorted alphabet, so the same corpus always gives the same pieces.
    """
    bpe = _bert_pipeline(Tokenizer(models.BPE()))
    bpe.train_from_iterator(texts, trainer=trainers.BpeTrainer(vocab_size=size, show_progress=False))
    vocab = bpe.get_vocab()
    return sorted(vocab, key=vocab.__getitem__)


def _bert_pipeline(tokenizer: Tokenizer) -> Tokenizer:
    """BERT's lower-casing normaliser and word/punctuation splitting, shared by training and use."""
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer
