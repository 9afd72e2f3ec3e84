from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gazerm.data.schema import Pair, PreferenceExample, examples_to_table, pairs_from_scores
from gazerm.features.featurize import GazeFeaturizer
from gazerm.features.implicit import N_IMPLICIT
from gazerm.features.reading_model import ReadingTimeModel
from gazerm.train.kinds.listwise import list_tiers
from gazerm.train.order import list_blocks
from gazerm.train.units import ToUnits
from tests.train.helpers import loss_spec

CONTEXT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello."},
    {"role": "assistant", "content": "Hi! What do you need?"},
]
RESPONSES = ["Knead the dough well.", "No idea.", "Mix flour, water and yeast, then bake it."]


def rated_example(**overrides) -> PreferenceExample:
    """Three responses rated 3 > 1 < 2, so the scores imply the pairs (0,1), (0,2), (2,1)."""
    fields = {
        "source": "dsp",
        "source_file": "ratings.jsonl",
        "source_row": 4,
        "prompt": "How do I bake bread?",
        "responses": RESPONSES,
        "label_kind": "rating",
        "scores": [3.0, 1.0, 2.0],
        "pairs": pairs_from_scores([3.0, 1.0, 2.0]),
        "context": CONTEXT,
        "domain": "cooking",
    }
    return PreferenceExample(**{**fields, **overrides})


def pairwise_example() -> PreferenceExample:
    return PreferenceExample(
        source="hh",
        source_file="hh.jsonl",
        source_row=1,
        prompt="Say hi.",
        responses=["Hello!", "Go away."],
        label_kind="pairwise",
        pairs=[Pair(0, 1)],  # no margin: the unit's margin is 0
    )


def flat_gaze(text: str) -> tuple[list[int], list[float]]:
    gaze = ReadingTimeModel().predict([text])[0]
    return np.ravel(gaze.spans).tolist(), gaze.features.astype(np.float32).ravel().tolist()


def test_pairwise_units_carry_both_texts_their_gaze_and_the_margin():
    rated, plain = rated_example(), pairwise_example()
    table = GazeFeaturizer()(examples_to_table([rated, plain]))
    units = ToUnits(loss_spec("pairwise"))(table).to_pylist()

    def unit(example, chosen, rejected, margin):
        chosen_spans, chosen_features = flat_gaze(example.responses[chosen])
        rejected_spans, rejected_features = flat_gaze(example.responses[rejected])
        prompt_spans, prompt_features = flat_gaze(example.prompt)
        return {
            "example_id": example.example_id,
            "source": example.source,
            "domain": example.domain,
            "prompt": example.prompt,
            "context": example.context,
            "prompt_spans": prompt_spans,
            "prompt_features": prompt_features,
            "chosen_text": example.responses[chosen],
            "chosen_spans": chosen_spans,
            "chosen_features": chosen_features,
            "chosen_implicit": [],
            "rejected_text": example.responses[rejected],
            "rejected_spans": rejected_spans,
            "rejected_features": rejected_features,
            "rejected_implicit": [],
            "margin": margin,
        }

    assert units == [
        unit(rated, 0, 1, 2.0),
        unit(rated, 0, 2, 1.0),
        unit(rated, 2, 1, 1.0),
        unit(plain, 0, 1, 0.0),
    ]
    words = [len(text.split()) for text in RESPONSES]
    assert [(len(u["chosen_spans"]), len(u["chosen_features"])) for u in units[:3]] == [
        (2 * words[i], 5 * words[i]) for i in (0, 0, 2)
    ]


def test_units_without_gaze_have_empty_gaze_lists():
    units = ToUnits(loss_spec("pairwise"))(examples_to_table([pairwise_example()])).to_pylist()
    assert [(u["chosen_spans"], u["chosen_features"], u["rejected_spans"]) for u in units] == [([], [], [])]
    assert [(u["prompt_spans"], u["prompt_features"]) for u in units] == [([], [])]


def test_shards_written_before_prompt_gaze_give_units_without_it(tmp_path):
    table = GazeFeaturizer()(examples_to_table([rated_example(), pairwise_example()]))
    old = table.drop_columns(["prompt_gaze"])
    pq.write_table(old, tmp_path / "old.parquet")
    units = ToUnits(loss_spec("pairwise"))(pq.read_table(tmp_path / "old.parquet")).to_pylist()
    assert units and all(u["prompt_spans"] == u["prompt_features"] == [] for u in units)
    assert units[0]["chosen_spans"] == flat_gaze(RESPONSES[0])[0]  # the responses' gaze is still there


def test_regression_units_from_scores():
    table = GazeFeaturizer()(examples_to_table([rated_example(), pairwise_example()]))
    # The pairwise-only example has no scores: no units.
    units = ToUnits(loss_spec("regression"))(table).to_pylist()
    assert [(u["text"], u["targets"]) for u in units] == [
        (RESPONSES[0], [3.0]),
        (RESPONSES[1], [1.0]),
        (RESPONSES[2], [2.0]),
    ]
    assert [(u["spans"], u["features"]) for u in units] == [flat_gaze(text) for text in RESPONSES]
    assert all(u["prompt"] == "How do I bake bread?" and u["context"] == CONTEXT for u in units)


@pytest.mark.parametrize("num_outputs", [2, 5])
def test_regression_units_from_attribute_scores(num_outputs):
    attributes = [[float(10 * i + k) for k in range(num_outputs)] for i in range(3)]
    table = examples_to_table([rated_example(attribute_scores=attributes)])
    units = ToUnits(loss_spec("regression", num_outputs))(table).to_pylist()
    assert [u["targets"] for u in units] == attributes
    with pytest.raises(
        ValueError, match=f"has {num_outputs} attribute scores but the model has num_outputs=3"
    ):
        ToUnits(loss_spec("regression", 3))(table)


@pytest.mark.parametrize(
    ("kind", "num_outputs"), [("pairwise", 1), ("regression", 1), ("regression", 2), ("listwise", 1)]
)
def test_block_unit_counts_match_the_units_to_units_yields(tmp_path, kind, num_outputs):
    examples = [
        rated_example(attribute_scores=[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        pairwise_example(),
        rated_example(source_row=9, responses=RESPONSES[:2], scores=[1.0, 1.0], pairs=[]),  # a tie: no pair
    ]
    table = examples_to_table(examples)
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=2)  # row groups of 2 + 1 rows
    pq.write_table(table.slice(0, 1), tmp_path / "b.parquet")
    paths = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    expected = {
        ("pairwise", 1): 4 + 3,
        ("regression", 1): 5 + 3,
        ("regression", 2): 3 + 3,
        ("listwise", 1): 2 + 1,  # the rated and the pairwise example; the tie orders nothing
    }[(kind, num_outputs)]
    produced = sum(ToUnits(loss_spec(kind, num_outputs))(pq.read_table(path)).num_rows for path in paths)
    blocks = list_blocks(paths, loss_spec(kind, num_outputs))
    assert [(block.path, block.row_group) for block in blocks] == [
        (paths[0], 0),
        (paths[0], 1),
        (paths[1], 0),
    ]
    assert sum(block.units for block in blocks) == produced == expected


def ranked_example(**overrides) -> PreferenceExample:
    return rated_example(label_kind="ranking", scores=None, ranking=[2, 0, 1], **overrides)


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        (ranked_example(), [(2, 0), (0, 1), (1, 2)]),  # the ranking, best first
        (rated_example(), [(0, 0), (2, 1), (1, 2)]),  # scores 3 > 2 > 1
        (rated_example(scores=[2.0, 1.0, 2.0]), [(0, 0), (2, 0), (1, 1)]),  # a tie shares a tier
        (pairwise_example(), [(0, 0), (1, 1)]),  # the single pair of a two-response example
        (rated_example(scores=[1.0, 1.0, 1.0]), []),  # all tied: no order
        (rated_example(label_kind="pairwise", scores=None), []),  # three responses, pairs only
    ],
)
def test_list_tiers(example, expected):
    assert list_tiers(example.to_row()) == expected


def test_listwise_units_carry_each_list_with_its_gaze_and_tiers():
    table = GazeFeaturizer()(examples_to_table([ranked_example(), rated_example(scores=[1.0, 1.0, 1.0])]))
    (unit,) = ToUnits(loss_spec("listwise"))(table).to_pylist()  # the all-tied example gives none
    order = [2, 0, 1]
    assert unit["texts"] == [RESPONSES[i] for i in order]
    assert unit["tiers"] == [0, 1, 2]
    assert [(s, f) for s, f in zip(unit["spans"], unit["features"], strict=True)] == [
        flat_gaze(RESPONSES[i]) for i in order
    ]
    assert (unit["prompt"], unit["context"]) == ("How do I bake bread?", CONTEXT)


def test_units_carry_each_response_implicit_features_or_none():
    table = examples_to_table([rated_example()])
    implicit = [[0.1 * k + i for k in range(N_IMPLICIT)] for i in range(2)] + [None]  # response 2: no logs
    table = table.set_column(table.schema.get_field_index("implicit"), "implicit", pa.array([implicit]))
    expected = [pytest.approx(values) if values else [] for values in implicit]
    pairs = ToUnits(loss_spec("pairwise"))(table).to_pylist()
    assert [(u["chosen_implicit"], u["rejected_implicit"]) for u in pairs] == [
        (expected[0], expected[1]),
        (expected[0], expected[2]),
        (expected[2], expected[1]),
    ]
    assert [u["implicit"] for u in ToUnits(loss_spec("regression"))(table).to_pylist()] == expected
    (listed,) = ToUnits(loss_spec("listwise"))(table).to_pylist()
    assert listed["implicit"] == [expected[0], expected[2], expected[1]]  # scores 3 > 2 > 1
