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


def test_prepare_drops_pairs_over_the_limit_before_splitting_and_counts_them(tmp_path):
    rows = [
        {"prompt": "p" * 10, "chosen": "c" * 40, "rejected": "r" * 40},  # 2 x 10 + 80 = 100: kept (not > 100)
        {"prompt": "q" * 10, "chosen": "c" * 41, "rejected": "r" * 40},  # 101: dropped
        {"prompt": "s" * 60, "chosen": "c", "rejected": "r"},  # 122: dropped (the prompt counts twice)
        {"prompt": "short", "chosen": "yes", "rejected": "no"},
    ]
    config = {
        "sources": [{"format": "generic", "path": str(write_jsonl(tmp_path / "pairs.jsonl", rows))}],
        "output_dir": str(tmp_path / "out"),
        "splits": {"train": 0.5, "validation": 0.5},
        "filter": {"max_pair_chars": 100},
        "gaze": {"predictor": "none"},
    }
    (tmp_path / "prepare.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "prepare.yaml")])
    assert result.exit_code == 0, result.output
    assert "2 over filter.max_pair_chars" in result.output
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert (manifest["sources"][0]["examples"], manifest["sources"][0]["too_long"]) == (2, 2)
    kept = [
        prompt
        for shards in manifest["splits"].values()
        for shard in shards
        for prompt in pq.read_table(tmp_path / "out" / shard["file"])["prompt"].to_pylist()
    ]
    assert sorted(kept) == ["p" * 10, "short"]


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
