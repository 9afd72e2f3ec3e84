"""The IFLLM release → pairwise or rating examples with recorded gaze and implicit behaviour features."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gazerm.data.errors import DataError
from gazerm.data.loaders.base import SourceReport, Tie
from gazerm.data.loaders.ifllm_traces import read_trace
from gazerm.data.schema import PreferenceExample
from gazerm.data.sources import iter_source
from gazerm.features.base import FEATURE_SCALES
from gazerm.features.webcam import PAIRWISE_NAMES
from tests.data.ifllm_fixture import GOOD, write_release


def _load(tmp_path, **options):
    items = list(iter_source("ifllm", write_release(tmp_path), **options))
    examples = [item for item in items if isinstance(item, PreferenceExample)]
    (report,) = [item for item in items if isinstance(item, SourceReport)]
    return examples, items, report


def test_pairwise_examples_groups_domains_and_exclusions(tmp_path):
    examples, items, report = _load(tmp_path)
    assert [e.source_row for e in examples] == [2, 3, 8]  # the consenting and the low-quality worker
    first = examples[0]
    assert first.responses == ["Paris is the capital of France.", 'It is "Paris" of course.']  # unescaped
    assert (first.pairs[0].chosen, first.pairs[0].rejected) == (1, 0)  # preference 2
    assert (first.group, first.domain, first.context) == (GOOD, "Europe", [])
    assert examples[2].domain is None and examples[2].implicit == [None, None]  # no traces for this task
    assert examples[2].recorded_gaze == [None, None]
    assert sum(isinstance(item, Tie) for item in items) == 1  # preference 0
    counts = report.counts
    assert (counts["no_consent_rows"], counts["no_consent_workers"], counts["rows_of_the_other_kind"]) == (
        1,
        1,
        2,
    )
    assert counts["examples_without_behaviour_files"] == 1
    assert counts["examples_with_behaviour_on_all_responses"] == 2
    assert report.implicit_feature_names == PAIRWISE_NAMES


def test_release_low_quality_list_and_explicit_ids(tmp_path):
    examples, _, report = _load(tmp_path, exclude_workers="release_low_quality")
    assert len(examples) == 2
    assert (report.counts["excluded_rows"], report.counts["excluded_worker_ids"]) == (1, ["worker_9683ed92"])
    examples, _, _ = _load(tmp_path / "again", exclude_workers=[GOOD])
    assert [e.group for e in examples] == ["worker_9683ed92"]


def test_sample_accounting(tmp_path):
    _, _, report = _load(tmp_path)
    samples = report.counts["samples"]
    assert samples["gaze"] == {"matched": 12, "unmatched": 1, "off_panel": 13, "no_text": 1, "placeholder": 1}
    assert samples["mouse"] == {"matched": 0, "unmatched": 0, "off_panel": 20, "no_text": 8, "placeholder": 0}
    # On the examples' responses: the placeholder line and the off-panel lines before any answer are not.
    assert samples["attributed"] == {
        "matched": 12,
        "unmatched": 1,
        "off_panel": 11,
        "no_text": 1,
        "placeholder": 0,
    }


def test_per_word_measures_from_the_hand_made_trace(tmp_path):
    first = _load(tmp_path)[0][0]
    measured = first.recorded_gaze[0].features * FEATURE_SCALES
    # fixations: word 0 (200 ms), word 3 (200), word 0 (100, a regression), word 5 (300 = the cap)
    expected = np.zeros((6, 5))
    expected[0] = [2, 200, 200, 300, 1]
    expected[3] = [1, 200, 300, 200, 1]  # go-past includes the regression to word 0
    expected[5] = [1, 300, 300, 300, 1]
    np.testing.assert_allclose(measured, expected, atol=1e-3)
    assert first.recorded_gaze[0].spans[3] == (13, 20)


def test_behaviour_features_by_hand(tmp_path):
    first = _load(tmp_path)[0][0]
    one, two = (dict(zip(PAIRWISE_NAMES, vector, strict=True)) for vector in first.implicit)
    hand = {
        "dwell_s": 0.8 / 60,  # six on-text samples: 5 x 100 ms + 300 ms (600 ms gap capped)
        "reading_completion": 3 / 6,
        "reading_position": (0 + 3 + 0 + 5) / 4 / 6,
        "regression_share": 1 / 3,
        "off_panel_share": 1 / 9,  # lines 3-11 belong to it, line 7 off the panel
        "mouse_path_px": 100 / 5000,
        "mouse_idle_share": 1 - 200 / 1100,
        "dwell_share": 0.8 / (0.8 + 0.3),
        "completion_diff": 0.5 - 0.4,
        "mouse_path_share": 1.0,
    }
    assert one == pytest.approx(hand, abs=1e-6)
    assert two["completion_diff"] == pytest.approx(-0.1) and two["mouse_path_share"] == 0.0
    assert two["mouse_idle_share"] == 1.0 and two["off_panel_share"] == pytest.approx(8 / 11)


def test_pointwise_ratings_with_context(tmp_path):
    examples, _, report = _load(tmp_path, kind="pointwise")
    assert [(e.label_kind, e.scores) for e in examples] == [("rating", [4.0]), ("rating", [5.0])]
    assert examples[1].context == [
        {"role": "user", "content": "Is tea a drink?"},
        {"role": "assistant", "content": "Tea is a drink."},
    ]
    assert examples[1].implicit == [None]  # no sample on its text
    assert len(examples[0].implicit[0]) == 7 and report.counts["responses_with_behaviour"] == 1


def test_a_bad_trace_line_names_file_line_and_field(tmp_path):
    dataset = write_release(tmp_path)
    trace = dataset / "user_behavior" / GOOD / "1" / "rel_gaze_one.csv"
    lines = trace.read_text().splitlines()
    lines[4] = lines[4].replace(",400,", ",soon,")
    trace.write_text("\n".join(lines) + "\n")
    errors = [item for item in iter_source("ifllm", dataset) if isinstance(item, DataError)]
    assert [(e.file, e.row, e.field) for e in errors] == [(str(trace), 5, "rel_ts")]


def test_a_bad_preference_names_the_query_log_row(tmp_path):
    dataset = write_release(tmp_path)
    logs = dataset / "query_logs_table.csv"
    logs.write_text(logs.read_text().replace(",1.0,0,", ",7.0,0,", 1))
    errors = [item for item in iter_source("ifllm", dataset) if isinstance(item, DataError)]
    assert [(e.row, e.field) for e in errors] == [(3, "preference")]
    assert errors[0].file.endswith("query_logs_table.csv")


def test_unescaped_windows_and_six_field_lines_are_read(tmp_path):
    dataset = write_release(tmp_path)
    trace = read_trace(dataset / "user_behavior" / GOOD / "1" / "rel_gaze_one.csv")
    assert trace.windows[10] == 'Say "hi", ok' and trace.centre[10] == 3 and trace.t_ms[10] == 1500
    six = read_trace(dataset / "user_behavior" / GOOD / "2" / "rel_gaze.csv")
    assert six.t_ms.tolist() == [0, 100, 200] and six.centre.tolist() == [0, 4, -1]


def test_a_file_path_is_refused(tmp_path):
    dataset = write_release(tmp_path)
    with pytest.raises(DataError, match="dataset/ directory"):
        list(iter_source("ifllm", dataset / "query_logs_table.csv"))


def _prepare_config(dataset, output, **gaze):
    from gazerm.data.config import PrepareConfig

    return PrepareConfig(
        sources=[
            {"format": "ifllm", "path": str(dataset), "options": {"exclude_workers": "release_low_quality"}}
        ],
        output_dir=str(output),
        splits={"train": 0.5, "validation": 0.5},
        gaze={"predictor": "source", "backend": "local", **gaze},
    )


def test_prepare_keeps_recorded_gaze_implicit_groups_and_the_accounting(tmp_path):
    import json

    import pyarrow.parquet as pq

    from gazerm.data.prepare import prepare
    from gazerm.data.shards import MANIFEST_NAME

    manifest = prepare(_prepare_config(write_release(tmp_path), tmp_path / "out"))
    assert manifest.gaze_source == "recorded:ifllm"
    assert manifest.implicit["feature_names"] == list(PAIRWISE_NAMES)
    assert manifest.implicit["responses_with_features"] == 4
    rows = [row for split in ("train", "validation") for path in manifest.shard_paths(tmp_path / "out", split)
            for row in pq.read_table(path).to_pylist()]  # fmt: skip
    assert sorted(row["group"] for row in rows) == [GOOD, GOOD]
    assert all(len(row["implicit"][0]) == len(PAIRWISE_NAMES) for row in rows)
    assert all(len(row["gaze"][0]["word_spans"]) == len(row["responses"][0].split()) for row in rows)
    written = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    report = written["sources"][0]["report"]
    assert report["samples"]["gaze"]["placeholder"] == 1 and report["excluded_workers"] == 1
    assert report["examples_with_behaviour_on_all_responses"] == 2


def test_prepare_rebuilds_when_a_file_of_the_release_changes(tmp_path):
    from gazerm.data.prepare import prepare

    dataset = write_release(tmp_path)
    config = _prepare_config(dataset, tmp_path / "out")
    before = prepare(config)
    from tests.data.ifllm_fixture import OFF, TIMES, _gaze

    trace = dataset / "user_behavior" / GOOD / "1" / "rel_gaze_two.csv"
    trace.write_text(_gaze([OFF] * len(TIMES)), encoding="utf-8")  # panel two: never looked at
    after = prepare(config)
    assert before.sources[0]["sha256"] != after.sources[0]["sha256"]
    assert after.sources[0]["report"]["examples_with_behaviour_on_all_responses"] == 0  # rebuilt, not reused


def test_prepare_with_another_predictor_clears_the_recorded_gaze(tmp_path):
    from gazerm.data.prepare import prepare

    manifest = prepare(_prepare_config(write_release(tmp_path), tmp_path / "out", predictor="none"))
    assert manifest.gaze_source is None and manifest.implicit["feature_names"] == list(PAIRWISE_NAMES)


def test_gaze_predictor_source_names_a_source_without_gaze(tmp_path):
    from gazerm.data.config import PrepareConfig
    from gazerm.data.prepare import prepare
    from tests.data.util import write_jsonl

    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    config = PrepareConfig(
        sources=[{"format": "generic", "path": str(path)}],
        output_dir=str(tmp_path / "out"),
        gaze={"predictor": "source"},
    )
    with pytest.raises(DataError, match=r"generic.*records no gaze"):
        prepare(config)


@pytest.mark.skipif(
    not os.environ.get("GAZERM_IFLLM_DIR"), reason="GAZERM_IFLLM_DIR (the release's dataset/) unset"
)
def test_the_real_release_prepares_with_behaviour_on_both_responses(tmp_path):
    from gazerm.config import load_config
    from gazerm.data.config import PrepareConfig
    from gazerm.data.prepare import prepare

    config = load_config(PrepareConfig, "jobs/ifllm_prepare.yaml", {"output_dir": str(tmp_path / "ifllm")})
    manifest = prepare(config)
    report = manifest.sources[0]["report"]
    assert report["examples_with_behaviour_on_all_responses"] >= 650
    assert report["excluded_workers"] == 18 and manifest.gaze_source == "recorded:ifllm"


def test_a_limit_is_refused_since_the_report_counts_the_whole_release(tmp_path):
    with pytest.raises(DataError, match=r"limit.*reads its source whole"):
        list(iter_source("ifllm", write_release(tmp_path), limit=1))
