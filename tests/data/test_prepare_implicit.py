"""``prepare`` with session logs: the ``implicit`` column, the manifest record, reuse, the synthetic set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gazerm.cache import file_sha256
from gazerm.data.config import SPLITS, GazeSpec, ImplicitSpec, PrepareConfig, SourceSpec
from gazerm.data.errors import DataError
from gazerm.data.implicit_join import add_implicit
from gazerm.data.prepare import prepare
from gazerm.data.schema import PreferenceExample, examples_to_table
from gazerm.data.shards import MANIFEST_NAME, Manifest
from gazerm.data.synthetic import write_implicit_feedback_set
from gazerm.features.implicit import IMPLICIT_FEATURE_NAMES, IMPLICIT_SCALES, N_IMPLICIT
from tests.data.util import assert_names, write_jsonl

N_PAIRS = 12
DWELL = IMPLICIT_FEATURE_NAMES.index("dwell_s")


def _pair(i: int) -> dict[str, str]:
    return {
        "prompt": f"Question {i}?",
        "chosen": f"A good answer to {i}.",
        "rejected": f"A poor answer to {i}.",
    }


def _session(prompt: str, response: str, dwell_ms: float, session_id: str = "s1", **extra: Any) -> dict:
    return {
        "session_id": session_id,
        "prompt": prompt,
        "response": response,
        "view": {"start_ms": 0, "end_ms": dwell_ms},
        **extra,
    }


@pytest.fixture
def pairs(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", [_pair(i) for i in range(N_PAIRS)])


@pytest.fixture
def sessions(tmp_path) -> Path:
    """Every chosen response viewed for (i + 1) s; rejected ones of even pairs for 0.5 s, twice for pair 0
    (0.5 s and 1.5 s: mean 1 s); the rest unseen; the last record views a response no pair has."""
    records = [_session(_pair(i)["prompt"], _pair(i)["chosen"], 1000 * (i + 1)) for i in range(N_PAIRS)]
    records += [_session(_pair(i)["prompt"], _pair(i)["rejected"], 500) for i in range(0, N_PAIRS, 2)]
    records.append(_session(_pair(0)["prompt"], _pair(0)["rejected"], 1500, session_id="s2"))
    records.append(_session("Question 0?", "An answer nobody asked for.", 700, session_id="stray"))
    return write_jsonl(tmp_path / "sessions.jsonl", records)


def _config(tmp_path: Path, pairs: Path, sessions: list[str] | None, **implicit: Any) -> PrepareConfig:
    return PrepareConfig(
        sources=[SourceSpec(format="generic", path=str(pairs))],
        output_dir=str(tmp_path / "out"),
        rows_per_shard=5,
        gaze=GazeSpec(predictor="none"),
        implicit=ImplicitSpec(sessions=sessions, **implicit) if sessions else None,
    )


def _rows(root: str | Path, manifest: Manifest) -> list[dict[str, Any]]:
    paths = [path for split in SPLITS for path in manifest.shard_paths(root, split)]
    return pa.concat_tables([pq.read_table(path) for path in paths]).to_pylist()


def test_implicit_column_holds_each_responses_features_in_order(tmp_path, pairs, sessions):
    config = _config(tmp_path, pairs, [str(sessions)])
    rows = _rows(config.output_dir, prepare(config))
    assert len(rows) == N_PAIRS
    for row in rows:
        i = int(row["prompt"].split()[1].rstrip("?"))
        chosen, rejected = row["implicit"]
        assert len(chosen) == N_IMPLICIT
        assert chosen[DWELL] == pytest.approx((i + 1) / IMPLICIT_SCALES[DWELL])
        if i % 2:
            assert rejected is None
        else:
            assert rejected[DWELL] == pytest.approx((1.0 if i == 0 else 0.5) / IMPLICIT_SCALES[DWELL])


def test_manifest_records_the_logs_the_counts_and_unmatched_records(tmp_path, pairs, sessions):
    implicit = prepare(_config(tmp_path, pairs, [str(tmp_path / "sess*.jsonl")])).implicit
    assert implicit["feature_names"] == list(IMPLICIT_FEATURE_NAMES)
    assert implicit["sessions"] == [{"file": str(sessions), "sha256": file_sha256(sessions)}]
    assert implicit["session_records"] == N_PAIRS + N_PAIRS // 2 + 2
    assert implicit["responses_with_features"] == N_PAIRS + N_PAIRS // 2
    assert implicit["responses_without_features"] == N_PAIRS // 2
    assert implicit["unmatched_session_records"] == 1
    assert implicit["unmatched"] == [
        {"file": str(sessions), "row": N_PAIRS + N_PAIRS // 2 + 2, "session_id": "stray"}
    ]
    assert Manifest.read(tmp_path / "out").implicit == implicit


def test_without_session_logs_the_column_is_null(tmp_path, pairs):
    manifest = prepare(_config(tmp_path, pairs, None))
    assert manifest.implicit is None
    assert all(row["implicit"] is None for row in _rows(tmp_path / "out", manifest))


def test_on_missing_raise_names_the_response_without_features(tmp_path, pairs, sessions):
    with pytest.raises(DataError) as error:
        prepare(_config(tmp_path, pairs, [str(sessions)], on_missing="raise"))
    assert_names(error.value, pairs, 2, "responses[1]")  # pair 1's rejected response: row 2 of the file


def test_a_session_pattern_matching_nothing_is_an_error(tmp_path, pairs):
    with pytest.raises(DataError, match="no session log file matches"):
        prepare(_config(tmp_path, pairs, [str(tmp_path / "missing-*.jsonl")]))


def test_a_bad_session_record_stops_prepare_naming_it(tmp_path, pairs):
    bad = _session("Question 0?", "A good answer to 0.", 1000, mouse=[{"t": 10, "x": "left", "y": 0}])
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [bad])
    with pytest.raises(DataError) as error:
        prepare(_config(tmp_path, pairs, [str(sessions)]))
    assert_names(error.value, sessions, 1, "mouse[0].x")


def test_a_changed_session_log_rebuilds_and_an_unchanged_one_reuses(tmp_path, pairs, sessions):
    config = _config(tmp_path, pairs, [str(sessions)])
    manifest_file = tmp_path / "out" / MANIFEST_NAME
    prepare(config)
    written = manifest_file.stat().st_mtime_ns
    prepare(config)
    assert manifest_file.stat().st_mtime_ns == written  # reused
    records = [json.loads(line) for line in sessions.read_text().splitlines()]
    records[0]["view"]["end_ms"] = 9000
    write_jsonl(sessions, records)
    rebuilt = prepare(config)
    assert manifest_file.stat().st_mtime_ns != written
    first = next(row for row in _rows(config.output_dir, rebuilt) if row["prompt"] == "Question 0?")
    assert first["implicit"][0][DWELL] == pytest.approx(9.0 / IMPLICIT_SCALES[DWELL])


def test_responses_are_matched_with_their_conversation_context(tmp_path):
    context = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    examples = [
        PreferenceExample("test", "data.jsonl", row, "Why?", ["Because.", "No."], "pairwise", context=turns)
        for row, turns in ((1, context), (2, []))
    ]
    sessions = write_jsonl(
        tmp_path / "sessions.jsonl",
        [_session("Why?", "Because.", 3000, context=context), _session("Why?", "No.", 6000)],
    )
    table, report = add_implicit(examples_to_table(examples), [sessions], "null")
    with_context, without = table.column("implicit").to_pylist()
    assert with_context[0][DWELL] == pytest.approx(3 / IMPLICIT_SCALES[DWELL]) and with_context[1] is None
    assert without[0] is None and without[1][DWELL] == pytest.approx(6 / IMPLICIT_SCALES[DWELL])
    assert (report["responses_with_features"], report["responses_without_features"]) == (2, 2)


def _word_length(text: str) -> float:
    return float(np.mean([len(word) for word in text.split()]))


def test_synthetic_set_has_its_signal_in_behaviour_and_none_in_the_text(tmp_path):
    pairs_path, sessions_path = write_implicit_feedback_set(tmp_path / "set", n=60, seed=5)
    records = [json.loads(line) for line in sessions_path.read_text().splitlines()]
    assert {"gaze", "fixations"} <= {key for record in records for key in record}  # both paths exercised
    config = _config(tmp_path, pairs_path, [str(sessions_path)], on_missing="raise")
    manifest = prepare(config)
    assert manifest.implicit["unmatched_session_records"] == 0
    rows = _rows(config.output_dir, manifest)
    assert len(rows) == 60
    implicit = np.array([row["implicit"] for row in rows])  # (pairs, chosen/rejected, features)
    for name in ("dwell_s", "scroll_depth", "fixation_count"):
        feature = IMPLICIT_FEATURE_NAMES.index(name)
        assert np.mean(implicit[:, 0, feature] > implicit[:, 1, feature]) > 0.9, name
    longer_words = np.mean([_word_length(r["responses"][0]) > _word_length(r["responses"][1]) for r in rows])
    assert 0.3 < longer_words < 0.7


@pytest.mark.slow  # starts Ray
def test_ray_gaze_backend_keeps_the_implicit_column(tmp_path, pairs, sessions, ray_local):
    local = _config(tmp_path, pairs, [str(sessions)]).model_copy(
        update={"gaze": GazeSpec(predictor="reading_model", backend="local", batch_size=4)}
    )
    on_ray = local.model_copy(
        update={"output_dir": str(tmp_path / "ray"), "gaze": GazeSpec(batch_size=4, workers=2)}
    )
    expected = _rows(local.output_dir, prepare(local))
    assert _rows(on_ray.output_dir, prepare(on_ray)) == expected
    assert sum(v is not None for row in expected for v in row["implicit"]) == N_PAIRS + N_PAIRS // 2
