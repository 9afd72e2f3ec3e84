"""Session logs → implicit behaviour features, checked against numbers worked out by hand."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gazerm.data.errors import DataError
from gazerm.data.implicit_join import load_implicit
from gazerm.data.loaders.sessions import read_session_log
from gazerm.features.implicit import (
    DEFAULT_PAGE_HEIGHT_PX,
    IMPLICIT_SCALES,
    N_IMPLICIT,
    ResponseKey,
    behaviour_features,
)
from tests.data.util import assert_names, write_jsonl

PROMPT, RESPONSE = "How do I bake bread?", "Knead, rest, bake."
CONTEXT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]

# A 10 s view. Mouse: 50 px in 1000 ms (50 px/s, moving), 100 px in 100 ms (moving), then 5 px in
# 4000 ms (1.25 px/s, idle). Scroll: 3 events, deepest 900 of 1200 px. Fixations: 3, mean 250 ms.
VIEW: dict[str, Any] = {
    "session_id": "s1",
    "prompt": PROMPT,
    "context": CONTEXT,
    "response": RESPONSE,
    "view": {"start_ms": 1000, "end_ms": 11000},
    "page_height": 1200,
    "scroll": [{"t": 2000, "y": 300}, {"t": 3000, "y": 900}, {"t": 5000, "y": 600}],
    "mouse": [
        {"t": 1000, "x": 0, "y": 0},
        {"t": 2000, "x": 30, "y": 40},
        {"t": 2100, "x": 90, "y": 120},
        {"t": 6100, "x": 93, "y": 124},
    ],
    "fixations": [
        {"onset": 1500, "duration": 200, "x": 10, "y": 10},
        {"onset": 1800, "duration": 300, "x": 50, "y": 10},
        {"onset": 2500, "duration": 250, "x": 90, "y": 10},
    ],
}
VIEW_RAW = [10.0, 3, 0.75, 155.0, 150 / 1.1, 1 - 1100 / 10000, 3, 250.0]
KEY = ResponseKey.of(PROMPT, CONTEXT, RESPONSE)


def _view(**changes: Any) -> dict[str, Any]:
    record = copy.deepcopy(VIEW)
    for name, value in changes.items():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value
    return record


def _raw(tmp_path: Path, *records: dict[str, Any]) -> np.ndarray:
    views = list(read_session_log(write_jsonl(tmp_path / "sessions.jsonl", list(records))))
    return behaviour_features(views)


def test_features_of_a_hand_made_view(tmp_path):
    np.testing.assert_allclose(_raw(tmp_path, VIEW), [VIEW_RAW], rtol=1e-6)


def test_absent_lists_give_zeros_and_the_default_page_height(tmp_path):
    record = _view(mouse=None, fixations=None, page_height=None, scroll=[{"t": 1000, "y": 500}])
    np.testing.assert_allclose(
        _raw(tmp_path, record), [[10.0, 1, 500 / DEFAULT_PAGE_HEIGHT_PX, 0, 0, 1, 0, 0]]
    )


def test_numeric_strings_are_read_like_the_loaders_read_them(tmp_path):
    record = _view()
    record["mouse"][1]["x"] = "30"
    np.testing.assert_allclose(_raw(tmp_path, record), [VIEW_RAW], rtol=1e-6)


def test_raw_webcam_gaze_goes_through_fixation_detection(tmp_path):
    """Irregular ~30 Hz samples resting on three points for 400, 300 and 500 ms: three fixations."""
    rng = np.random.default_rng(0)
    targets = [((100, 100), 400), ((500, 100), 300), ((900, 400), 500)]
    samples, t = [], 1000.0
    for (x, y), duration in targets:
        end = t + duration
        while t < end:
            samples.append({"t": round(t), "x": x + rng.normal(0, 5), "y": y + rng.normal(0, 5)})
            t += rng.uniform(30, 37)
    raw = _raw(tmp_path, _view(fixations=None, gaze=samples))[0]
    assert raw[6] == 3
    assert abs(raw[7] - 400) < 50  # the grid and the frame rate blur each fixation by a frame or so


def test_views_of_one_response_are_averaged_and_contexts_tell_responses_apart(tmp_path):
    longer = _view(session_id="s2", view={"start_ms": 1000, "end_ms": 31000}, fixations=None)
    other_context = _view(context=None)
    path = write_jsonl(tmp_path / "sessions.jsonl", [VIEW, longer, other_context])
    implicit = load_implicit([path])
    assert implicit.records == 3
    assert [len(views) for views in implicit.views.values()] == [2, 1]
    longer_raw = [30.0, 3, 0.75, 155.0, 150 / 1.1, 1 - 1100 / 30000, 0, 0]
    expected = (np.array(VIEW_RAW) + np.array(longer_raw)) / 2 / IMPLICIT_SCALES
    np.testing.assert_allclose(implicit.features[KEY], expected, rtol=1e-6)
    np.testing.assert_allclose(
        implicit.features[ResponseKey.of(PROMPT, None, RESPONSE)],
        np.array(VIEW_RAW) / IMPLICIT_SCALES,
        rtol=1e-6,
    )
    assert implicit.features[KEY].dtype == np.float32 and implicit.features[KEY].shape == (N_IMPLICIT,)


def _set(path: str, value: Any) -> dict[str, Any]:
    """VIEW with the item at ``path`` (``mouse.2.t``) set; ``None`` deletes it."""
    record = copy.deepcopy(VIEW)
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    holder = record
    for part in parents:
        holder = holder[part]
    if value is None:
        del holder[last]
    else:
        holder[last] = value
    return record


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        (_set("mouse.2.t", 1500), "mouse[2].t", "must increase"),
        (_set("scroll.1.t", 2000), "scroll[1].t", "must increase"),
        (_set("fixations.2.onset", 1700), "fixations[2].onset", "must increase"),
        (_set("view.end_ms", 900), "view.end_ms", "not after its start"),
        (_set("view.start_ms", None), "view.start_ms", "missing"),
        (_set("prompt", None), "prompt", "missing"),
        (_set("response", "  "), "response", "empty"),
        (_set("session_id", None), "session_id", "missing"),
        (_set("mouse.1.x", "left"), "mouse[1].x", "expected a number"),
        (_set("mouse.1.y", None), "mouse[1].y", "missing"),
        (_set("mouse.0.y", True), "mouse[0].y", "expected a number"),
        (_set("mouse.1", [30, 40]), "mouse[1]", "expected dict"),
        (_set("scroll.0.y", float("nan")), "scroll[0].y", "finite"),
        (_set("mouse.3.t", 12000), "mouse[3].t", "outside the view"),
        (_set("scroll", {"t": 1}), "scroll", "expected list"),
        (_set("fixations.1.duration", 0), "fixations[1].duration", "must be positive"),
        (_set("context.1.role", None), "context[1].role", "missing"),
        (_set("page_height", 0), "page_height", "must be positive"),
        (_set("gaze", [{"t": 1000, "x": 1, "y": 1}]), "fixations", "not both"),
    ],
)
def test_bad_records_name_file_row_and_field(tmp_path, record, field, message):
    path = write_jsonl(tmp_path / "sessions.jsonl", [VIEW, record])
    with pytest.raises(DataError) as error:
        load_implicit([path])
    assert_names(error.value, path, 2, field)
    assert message in error.value.message


def test_a_line_that_is_not_json_names_its_row(tmp_path):
    path = write_jsonl(tmp_path / "sessions.jsonl", [VIEW])
    path.write_text(path.read_text() + '{"session_id": "s2", "prompt"\n')
    with pytest.raises(DataError) as error:
        load_implicit([path])
    assert_names(error.value, path, 2, None)
