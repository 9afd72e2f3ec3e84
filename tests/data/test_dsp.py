"""DSP text-score and domain-preference files, in every transcript style the release uses."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gazerm.data.config import GazeSpec, PrepareConfig, SourceSpec
from gazerm.data.errors import DataError
from gazerm.data.loaders.base import FORMATS, Tie
from gazerm.data.loaders.dsp import RESPONSE_KEYS
from gazerm.data.prepare import prepare
from tests.data.util import assert_names, examples, load, only_error, pairs, write_json

PREFIX = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Tell me a fact."


def texts(*replies: str) -> list[str]:
    """Transcripts in the HH style of DSP's helpful/harmless files."""
    return [f"{PREFIX}\n\nAssistant: {reply}" for reply in replies]


def headed(request: str, *replies: str) -> list[str]:
    """Transcripts in DSP's own template (QUERY_PROMPT of its reward_datasets.py): webgpt, gpt4llm and
    the domain files its script converts."""
    return [f"## Human:\n{request}\n\n## Assistant:\n{reply}" for reply in replies]


def webgpt(question: str, scores: list[float]) -> dict[str, Any]:
    """An item as in DSP's webgpt file: the question's blank lines kept, answers led by a space."""
    answers = [f" Answer {k} to {question} [1]." for k in range(len(scores))]
    return {"text": [f"## Human:\n{question}\n\n\n\n## Assistant:\n{a}" for a in answers], "score": scores}


def test_no_hub_dataset_for_the_json_release():
    assert FORMATS["dsp"].hub_name is None
    assert FORMATS["dsp_domain"].hub_name is None


def test_two_texts_are_a_pairwise_example(tmp_path):
    path = write_json(tmp_path / "dsp.json", [{"text": texts("Water is wet.", "No."), "score": [1.0, 0.0]}])
    (example,) = examples(load("dsp", path))
    assert example.context == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert (example.prompt, example.responses) == ("Tell me a fact.", ["Water is wet.", "No."])
    assert (example.label_kind, example.scores, example.ranking) == ("pairwise", [1.0, 0.0], None)
    assert pairs(example) == [(0, 1, 1.0)]


def test_more_texts_are_a_ranking_by_score(tmp_path):
    path = write_json(tmp_path / "dsp.json", [{"text": texts("C", "A", "B"), "score": [0.5, 2, 1]}])
    (example,) = examples(load("dsp", path))
    assert (example.label_kind, example.ranking, example.scores) == ("ranking", [1, 2, 0], [0.5, 2.0, 1.0])
    assert pairs(example) == [(1, 0, 1.5), (1, 2, 1.0), (2, 0, 0.5)]


@pytest.mark.parametrize(
    ("record", "prompt", "kind", "expected_pairs"),
    [
        (
            webgpt("Why is the sky blue?\n\n[removed]", [1.5, 0.5]),
            "Why is the sky blue?\n\n[removed]",
            "pairwise",
            [(0, 1, 1.0)],
        ),
        # gpt4llm: GPT-4's 1-10 ratings of three models' answers; a partial tie gives no pair and no
        # ranking (a ranking would order the tied answers) but stays a rating
        (
            {
                "text": headed(
                    "Name three primary colors.\nBe brief.",
                    "Red, yellow, blue.",
                    "Red, blue, yellow.",
                    "Green.",
                ),
                "score": [9, 9, 4],
            },
            "Name three primary colors.\nBe brief.",
            "rating",
            [(0, 2, 5.0), (1, 2, 5.0)],
        ),
        # domain pairs and lists from DSP's converter (reward_datasets.py --convert [--to_pairs])
        (
            {"text": headed("Explain rain.", "academy answer", "normal answer"), "score": [0.99999, 0.0]},
            "Explain rain.",
            "pairwise",
            [(0, 1, 0.99999)],
        ),
        (
            {
                "text": headed("Explain rain.", *(f"{key} answer" for key in RESPONSE_KEYS)),
                "score": [1, 0, 0, 0, 0],
            },
            "Explain rain.",
            "rating",
            [(0, 1, 1.0), (0, 2, 1.0), (0, 3, 1.0), (0, 4, 1.0)],
        ),
    ],
    ids=["webgpt", "gpt4llm", "domain-pairs", "domain-lists"],
)
def test_every_transcript_style_of_the_release_loads(tmp_path, record, prompt, kind, expected_pairs):
    path = write_json(tmp_path / "dsp.json", [record])
    (example,) = examples(load("dsp", path))
    assert (example.context, example.prompt, example.label_kind, example.ranking) == ([], prompt, kind, None)
    assert example.responses == [text.split("## Assistant:\n")[1].strip() for text in record["text"]]
    assert pairs(example) == expected_pairs


def test_an_item_without_a_preference_is_a_tie_not_an_example_nor_an_error(tmp_path):
    records = [
        webgpt("Q1?", [1.0, 1.0]),
        {"text": headed("Q2?", "Same.", "Same."), "score": [1, 0]},  # one reply for both
        {"text": texts("A", "B", "C"), "score": [2, 2, 2]},
        webgpt("Q4?", [2.0, 0.0]),
    ]
    path = write_json(tmp_path / "dsp.json", records)
    *ties, example = load("dsp", path)
    assert ties == [Tie(str(path), 1), Tie(str(path), 2), Tie(str(path), 3)]
    assert (example.source_row, pairs(example)) == (4, [(0, 1, 2.0)])


def test_a_transcript_without_speaker_turns_names_file_row_field_and_the_styles(tmp_path):
    records = [webgpt("Q?", [1, 0]), {"text": ["Q: Hi?\nA: Yes.", "Q: Hi?\nA: No."], "score": [1, 0]}]
    path = write_json(tmp_path / "dsp.json", records)
    error = only_error(load("dsp", path))
    assert_names(error, path, 2, "text[0]")
    assert "no speaker turns of a known style" in error.message
    assert "'\\n\\nHuman: …\\n\\nAssistant: …' (anthropic)" in error.message
    assert "'## Human:\\n…\\n\\n## Assistant:\\n…' (heading)" in error.message


def test_prepare_counts_ties_in_the_manifest_and_its_log(tmp_path, caplog):
    scores = [[1.5, 0.5], [1.0, 1.0], [0.0, 2.0], [2.0, 0.0], [1.0, 1.0]] * 2
    scores[9] = [0.5, 1.5]  # 3 of the 10 items tie
    path = write_json(
        tmp_path / "webgpt.test.json", [webgpt(f"Question {k}?", s) for k, s in enumerate(scores)]
    )
    config = PrepareConfig(
        sources=[SourceSpec(format="dsp", path=str(path))],
        output_dir=str(tmp_path / "out"),
        gaze=GazeSpec(predictor="none"),
    )
    with caplog.at_level(logging.INFO, logger="gazerm.data.prepare"):
        manifest = prepare(config)
    (source,) = manifest.sources
    assert (source["examples"], source["ties"], source["quarantined"]) == (7, 3, 0)
    assert sum(manifest.rows(split) for split in manifest.splits) == 7
    assert f"{path}: 7 examples, 3 ties, 0 quarantined" in caplog.text


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"text": texts("A", "B"), "score": [1.0]}, "score"),
        ({"text": texts("A"), "score": [1.0]}, "text"),
        ({"text": texts("A", "B"), "score": [1.0, "high"]}, "score[1]"),
        ({"text": [*texts("A"), 3], "score": [1.0, 0.0]}, "text[1]"),
        ({"text": [*texts("A"), "Human: Other\n\nAssistant: B"], "score": [1, 0]}, "text[1]"),
        ({"text": "A", "score": [1.0]}, "text"),
        ({"text": [*texts("A"), "just text"], "score": [1, 1]}, "text[1]"),  # a tie is still parsed
    ],
)
def test_bad_text_score_item(tmp_path, record, field):
    path = write_json(tmp_path / "dsp.json", [{"text": texts("A", "B"), "score": [1, 0]}, record])
    assert_names(only_error(load("dsp", path)), path, 2, field)


def domain_item(**overrides: str) -> dict:
    responses = {
        key: f"{key} answer" for key in ("academy", "business", "entertainment", "literature", "normal")
    }
    return {"query": "Explain rain.", "responses": {**responses, **overrides}}


def test_domain_response_is_preferred_over_the_others(tmp_path):
    path = write_json(tmp_path / "domain.json", [domain_item()])
    (example,) = examples(load("dsp_domain", path, domain="business"))
    assert example.responses == [
        "business answer",
        "academy answer",
        "entertainment answer",
        "literature answer",
        "normal answer",
    ]
    assert (example.prompt, example.domain, example.label_kind, example.source) == (
        "Explain rain.",
        "business",
        "pairwise",
        "dsp_domain",
    )
    assert pairs(example) == [(0, 1, None), (0, 2, None), (0, 3, None), (0, 4, None)]


def test_equal_responses_are_kept_once(tmp_path):
    item = domain_item(business="same", normal="same", literature="academy answer")
    path = write_json(tmp_path / "domain.json", [item])
    (example,) = examples(load("dsp_domain", path, domain="business"))
    assert example.responses == ["same", "academy answer", "entertainment answer"]
    assert pairs(example) == [(0, 1, None), (0, 2, None)]


def test_all_equal_responses_are_a_tie(tmp_path):
    path = write_json(
        tmp_path / "domain.json", [domain_item(**dict.fromkeys(RESPONSE_KEYS, "x")), domain_item()]
    )
    tie, example = load("dsp_domain", path, domain="literature")
    assert (tie, example.source_row) == (Tie(str(path), 1), 2)


def test_missing_domain_response_names_it(tmp_path):
    item = domain_item()
    del item["responses"]["normal"]
    path = write_json(tmp_path / "domain.json", [item])
    assert_names(only_error(load("dsp_domain", path, domain="academy")), path, 1, "responses.normal")


def test_domain_option_is_required_and_checked(tmp_path):
    path = write_json(tmp_path / "domain.json", [domain_item()])
    with pytest.raises(DataError, match="domain"):
        load("dsp_domain", path)
    with pytest.raises(DataError) as caught:
        load("dsp_domain", path, domain="normal")
    assert_names(caught.value, path, None, "options.domain")
