"""DSP text-score and domain-preference files."""

from __future__ import annotations

import pytest

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import FORMATS
from gazerm.data.loaders.dsp import RESPONSE_KEYS
from tests.data.util import assert_names, examples, load, only_error, pairs, write_json

PREFIX = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Tell me a fact."


def texts(*replies: str) -> list[str]:
    return [f"{PREFIX}\n\nAssistant: {reply}" for reply in replies]


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
    path = write_json(tmp_path / "dsp.json", [{"text": texts("B", "A", "C"), "score": [0.5, 2, 0.5]}])
    (example,) = examples(load("dsp", path))
    assert (example.label_kind, example.ranking, example.scores) == ("ranking", [1, 0, 2], [0.5, 2.0, 0.5])
    assert pairs(example) == [(1, 0, 1.5), (1, 2, 1.5)]  # equal scores give no pair


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"text": texts("A", "B"), "score": [1.0]}, "score"),
        ({"text": texts("A"), "score": [1.0]}, "text"),
        ({"text": texts("A", "B"), "score": [1.0, "high"]}, "score[1]"),
        ({"text": [*texts("A"), 3], "score": [1.0, 0.0]}, "text[1]"),
        ({"text": [*texts("A"), "Human: Other\n\nAssistant: B"], "score": [1, 0]}, "text[1]"),
        ({"text": "A", "score": [1.0]}, "text"),
        ({"text": texts("A", "B"), "score": [1.0, 1.0]}, "pairs"),
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
    path = write_json(tmp_path / "domain.json", [domain_item(**dict.fromkeys(RESPONSE_KEYS, "x"))])
    error = only_error(load("dsp_domain", path, domain="literature"))
    assert_names(error, path, 1, "responses.literature")
    assert error.message.startswith("tie: no preference")


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
