"""Local tokenizers: every build from the same corpus must be identical, or saved models and Ray workers
that rebuild the tokenizer would disagree on what each id means."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gazerm.model.tokenizers import build_local_tokenizer

TEXT = "Reading fixations grow quickly, Zebra!"


@pytest.mark.parametrize("style", ["llama", "bert"])
def test_three_builds_give_the_same_vocabulary_and_ids(style):
    builds = [build_local_tokenizer(style) for _ in range(3)]
    vocabularies = [build.get_vocab() for build in builds]
    assert vocabularies[0] == vocabularies[1] == vocabularies[2]
    ids = [build(TEXT)["input_ids"] for build in builds]
    assert ids[0] == ids[1] == ids[2]


@pytest.mark.parametrize(("style", "first"), [("llama", "<s>"), ("bert", "[CLS]")])
def test_offsets_point_back_into_the_text(style, first):
    tokenizer = build_local_tokenizer(style)
    encoded = tokenizer(TEXT, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == first
    spans = [(start, end) for start, end in encoded["offset_mapping"] if end > start]
    # byte-level BPE keeps the space before a word in its token, WordPiece drops it
    assert "".join(TEXT[start:end].strip() for start, end in spans) == TEXT.replace(" ", "")
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_bert_style_is_lower_cased_wordpiece_within_the_vocab_size():
    tokenizer = build_local_tokenizer("bert", vocab_size=300)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Zebra")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1].startswith("z") and all(t.startswith("##") for t in tokens[2:-1])
    assert tokenizer.decode(tokenizer("Zebra")["input_ids"], skip_special_tokens=True) == "zebra"
    assert len(tokenizer) <= 300


def test_unknown_style_is_rejected():
    with pytest.raises(ValueError, match="unknown tokenizer style"):
        build_local_tokenizer("gpt")  # type: ignore[arg-type]


def test_counting_tokens_on_request_threads_never_meets_the_encoding_thread(tokenizers):
    """A server counts each request's tokens on its own thread while a batch is encoded on another; one fast
    tokenizer serving both fails ("Already borrowed"), so counting uses a per-thread copy."""
    from concurrent.futures import ThreadPoolExecutor

    from gazerm.model.inputs import PromptResponse, SequenceEncoder

    encoder = SequenceEncoder(tokenizers["tiny-llama"], 16)
    empty = np.zeros(0, dtype=np.float32)
    text = "many words to count here " * 20

    def count_or_encode(turn: int) -> int:
        if turn % 2:
            return encoder.trim_context(None, text, [text, text])[2][0]
        return len(encoder.encode([PromptResponse(text, text, empty, empty)])[0]["input_ids"])

    with ThreadPoolExecutor(4) as pool:
        lengths = list(pool.map(count_or_encode, range(400)))
    assert set(lengths) == {16}
    assert encoder._counting_tokenizer() is not encoder.tokenizer
