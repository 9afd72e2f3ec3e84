"""``filter.max_pair_chars``: the reference's 10,000-character pair filter, applied before any split."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.data.length_filter import LengthFilter
from gazerm.data.schema import Pair, PreferenceExample
from gazerm.data.shards import MANIFEST_NAME
from gazerm.errors import ConfigError
from tests.data.util import write_jsonl

# Renders a turn as <role>content</role>: 36 characters around a prompt and a response.
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
FRAME = len("<user></user><assistant></assistant>")


def _pair(prompt: str, chosen: str, rejected: str) -> PreferenceExample:
    return PreferenceExample("t", "t.jsonl", 0, prompt, [chosen, rejected], "pairwise", [Pair(0, 1)])


@pytest.fixture
def chat_tokenizer(tmp_path) -> str:
    """A local tokenizer directory whose chat template is ``TEMPLATE``."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, "[UNK]")))
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(tmp_path / "tok")
    return str(tmp_path / "tok")


def _prepare(tmp_path, name: str, rows: list[dict], limit: int | None) -> dict:
    """``gazerm prepare`` of ``rows`` split by a seeded shuffle; the manifest and the prompts per split."""
    config = {
        "sources": [{"format": "generic", "path": str(write_jsonl(tmp_path / f"{name}.jsonl", rows))}],
        "output_dir": str(tmp_path / name),
        "splits": {"train": 0.5, "validation": 0.5},
        "split_method": "shuffle",
        "seed": 3,
        "filter": {"max_pair_chars": limit},
        "gaze": {"predictor": "none"},
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / f"{name}.yaml")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / name / MANIFEST_NAME).read_text())
    prompts = {
        split: sorted(
            p
            for shard in shards
            for p in pq.read_table(tmp_path / name / shard["file"])["prompt"].to_pylist()
        )
        for split, shards in manifest["splits"].items()
    }
    return {"manifest": manifest, "prompts": prompts, "output": result.output}


def test_prepare_drops_pairs_over_the_limit_before_splitting_and_counts_them(tmp_path):
    over = [
        {"prompt": "q" * 10, "chosen": "c" * 41, "rejected": "r" * 40},  # 101: dropped
        {"prompt": "s" * 60, "chosen": "c", "rejected": "r"},  # 122: dropped (the prompt counts twice)
    ]
    kept = [{"prompt": "p" * 10, "chosen": "c" * 40, "rejected": "r" * 40}]  # 2 x 10 + 80 = 100: kept
    kept += [{"prompt": f"short {i}", "chosen": "yes", "rejected": "no"} for i in range(9)]
    filtered = _prepare(tmp_path, "filtered", over + kept, 100)
    assert "2 over filter.max_pair_chars" in filtered["output"]
    source = filtered["manifest"]["sources"][0]
    assert (source["examples"], source["too_long"]) == (10, 2)
    # Split as if the long rows had never been there: the shuffle saw only the kept rows.
    assert filtered["prompts"] == _prepare(tmp_path, "alone", kept, None)["prompts"]
    assert sorted(p for prompts in filtered["prompts"].values() for p in prompts) == sorted(
        r["prompt"] for r in kept
    )


def _ranked(prompt: str, *responses: str, context: list | None = None) -> PreferenceExample:
    pairs = [Pair(0, j) for j in range(1, len(responses))]
    return PreferenceExample(
        "t", "t.jsonl", 0, prompt, list(responses), "pairwise", pairs, context=context or []
    )


def test_a_row_of_more_responses_stays_only_if_every_pair_of_them_passes():
    over = LengthFilter(max_pair_chars=100).too_long()
    # Each response with the prompt: 50, 50, 30 characters; summed over all three 130 > 100, but every
    # pair is at most 100: the row stays, as each of its pairs would in the reference.
    assert over(_ranked("p" * 10, "a" * 40, "b" * 40, "c" * 20)) is False
    assert over(_ranked("p" * 10, "a" * 41, "b" * 40, "c" * 20)) is True  # the two longest: 101
    assert over(_ranked("p" * 10, "a" * 91)) is True  # one response, counted alone: 101


def test_context_turns_count_in_each_conversation_as_the_reference_renders_them(chat_tokenizer):
    context = [{"role": "user", "content": "u" * 10}, {"role": "assistant", "content": "a" * 10}]
    pair = _ranked("p" * 10, "c" * 20, "r" * 20, context=context)  # each conversation: 20 + 10 + 20
    assert LengthFilter(max_pair_chars=100).too_long()(pair) is False
    assert LengthFilter(max_pair_chars=99).too_long()(pair) is True
    rendered = LengthFilter(
        max_pair_chars=100 + 2 * FRAME + 2 * FRAME, chat_template=chat_tokenizer
    ).too_long()
    assert rendered(pair) is False  # each conversation renders two user and two assistant frames
    assert LengthFilter(max_pair_chars=99 + 4 * FRAME, chat_template=chat_tokenizer).too_long()(pair) is True


def test_without_a_limit_nothing_is_dropped():
    assert LengthFilter().too_long() is None


def test_a_chat_template_counts_the_rendered_texts_as_the_reference_does(chat_tokenizer):
    pair = _pair("p" * 10, "c" * 40, "r" * 40)  # bare: 100 characters, rendered: 100 + 2 x FRAME
    assert LengthFilter(max_pair_chars=100).too_long()(pair) is False
    rendered = LengthFilter(max_pair_chars=100 + 2 * FRAME, chat_template=chat_tokenizer).too_long()
    assert rendered(pair) is False
    assert rendered(_pair("p" * 10, "c" * 41, "r" * 40)) is True
    assert LengthFilter(max_pair_chars=100, chat_template=chat_tokenizer).too_long()(pair) is True


def test_a_template_without_a_limit_or_a_tokenizer_without_a_template_is_refused(chat_tokenizer, tmp_path):
    with pytest.raises(ValidationError, match="set that too"):
        LengthFilter(chat_template=chat_tokenizer)
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(chat_tokenizer)
    plain.chat_template = None
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(ConfigError, match="has no chat template"):
        LengthFilter(max_pair_chars=10, chat_template=str(tmp_path / "plain")).too_long()
