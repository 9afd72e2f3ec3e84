"""Issue #24, serving: no input gives a traceback, no request can hold a replica, nothing half-written
is served. A table of abusive inputs, each with the outcome the API must give, then the cases that need
their own model or setup. All in process (FastAPI's TestClient); Ray is never started."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gazerm.errors import ConfigError
from gazerm.model.inputs import InputSpec
from gazerm.model.io import save_reward_model
from gazerm.model.reward_model import build_tokenizer
from gazerm.score import RewardScorer
from gazerm.serve.api import (
    MAX_BODY_BYTES,
    MAX_FIXATIONS_PER_RESPONSE,
    MAX_TEXT_CHARS,
    MAX_TURNS,
    Job,
    Limits,
    build_app,
    check_exposure,
    score_batch,
    token_digest,
)
from gazerm.serve.deployment import app_builder
from tests.model.conftest import tiny_config
from tests.model.test_io import trained_looking
from tests.serve.conftest import AUTH, TOKEN

LIMITS = Limits(max_request_chars=50_000, max_request_tokens=2_000)


@pytest.fixture(scope="module")
def client(scorer) -> TestClient:
    return TestClient(build_app(scorer, token_digest(TOKEN), limits=LIMITS), raise_server_exceptions=False)


def fixation(word_idx: int = 0, onset: float = 0, duration: float = 200) -> dict:
    return {"word_idx": word_idx, "onset": onset, "duration": duration}


def read(text: str, *fixations: dict) -> dict:
    return {"prompt": "Why?", "responses": [{"text": text, "fixations": list(fixations)}]}


def chunked(data: bytes, size: int = 2**20):
    """A body without content-length (Transfer-Encoding: chunked)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


LONG = "word " * (MAX_TEXT_CHARS // 5)  # a field at its own limit
ABUSE = [
    # (id, request kwargs, status, the field or message the answer must name)
    (
        "declared-huge-body",
        {"content": b"{}", "headers": {"content-length": str(MAX_BODY_BYTES + 1)}},
        413,
        "bytes",
    ),
    ("chunked-huge-body", {"content": chunked(b" " * (MAX_BODY_BYTES + 1))}, 413, "bytes"),
    (
        "chunked-huge-json",
        {"content": chunked(json.dumps({"prompt": "x" * MAX_BODY_BYTES}).encode())},
        413,
        "bytes",
    ),
    ("bad-content-length", {"content": b"{}", "headers": {"content-length": "-1"}}, 413, "bytes"),
    ("over-char-budget", {"json": {"prompt": LONG, "responses": [LONG[:-1]]}}, 422, "body"),
    (
        "over-token-budget",
        {"json": {"prompt": "Why?", "responses": ["a b c d e f g h i j " * 20] * 40}},
        422,
        "responses",
    ),
    (
        "too-many-turns",
        {
            "json": {
                "prompt": "Why?",
                "responses": ["x"],
                "context": [{"role": "user", "content": "hi"}] * (MAX_TURNS + 1),
            }
        },
        422,
        "context",
    ),
    (
        "overlapping-fixations",
        {"json": read("one two three", fixation(0, 0, 300), fixation(1, 200, 100))},
        422,
        "responses.0.fixations",
    ),
    (
        "zero-duration",
        {"json": read("one two", fixation(duration=0))},
        422,
        "responses.0.fixations.0.duration",
    ),
    (
        "over-5s-duration",
        {"json": read("one two", fixation(duration=5000.5))},
        422,
        "responses.0.fixations.0.duration",
    ),
    ("word-beyond-text", {"json": read("one two", fixation(word_idx=2))}, 422, "responses.0.fixations"),
    (
        "too-many-fixations-per-response",
        {"json": read("one", *[fixation(0, 10.0 * i, 5) for i in range(MAX_FIXATIONS_PER_RESPONSE + 1)])},
        422,
        "responses.0.fixations",
    ),
    (
        "nan-duration",
        {
            "content": b'{"prompt": "a", "responses": [{"text": "b", "fixations": '
            b'[{"word_idx": 0, "onset": 0, "duration": NaN}]}]}'
        },
        422,
        "responses.0.fixations.0.duration",
    ),
    # what the JSON parser itself chokes on is FastAPI's 400, still one line and no traceback
    ("deep-nesting", {"content": b"[" * 100_000 + b"]" * 100_000}, 400, "error parsing the body"),
    ("not-utf8", {"content": b'{"prompt": "\xff\xfe", "responses": ["x"]}'}, 400, "error parsing the body"),
    (
        "token-as-body-only",
        {
            "json": {"prompt": "Why?", "responses": ["x"]},
            "headers": {"Authorization": "Bearer " + "x" * 5000},
        },
        401,
        "bearer token",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "named"), [case[1:] for case in ABUSE], ids=[c[0] for c in ABUSE]
)
def test_each_abusive_input_gets_its_answer_and_no_traceback(client, kwargs, status, named):
    headers = {**AUTH, "Content-Type": "application/json", **kwargs.get("headers", {})}
    response = client.post("/score", **{k: v for k, v in kwargs.items() if k != "headers"}, headers=headers)
    assert response.status_code == status, response.text[:500]
    detail = response.json()["detail"]
    names = (
        [problem["field"] for problem in detail] + [p["msg"] for p in detail]
        if isinstance(detail, list)
        else [detail]
    )
    assert any(named in name for name in names), detail
    assert "Traceback" not in response.text


def test_a_long_context_is_trimmed_before_tokenizing_and_scores_as_the_full_one(client, scorer, monkeypatch):
    """The turns left truncation cuts anyway are dropped first: the rewards are the full context's, the
    context is tokenized a few times (a bisection over its turns), never once per response."""
    context = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "lorem ipsum dolor " * 150}
        for i in range(16)
    ]
    responses = [f"Response {i}: " + "fine " * i for i in range(8)]
    body = {"prompt": "And now?", "context": context, "responses": responses}
    expected = scorer.score([body["prompt"]] * 8, responses, [context] * 8)
    calls: list[list[int]] = []
    tokenizer = scorer.encoder.tokenizer
    original = type(tokenizer).__call__

    def measuring(self, text, *args, **kwargs):
        calls.append([len(t) for t in text] if isinstance(text, list) else [len(text)])
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", measuring)
    response = client.post("/score", json=body, headers=AUTH)
    monkeypatch.undo()
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["rewards"], expected, atol=1e-5, rtol=0)
    full = sum(len(turn["content"]) for turn in context)
    assert sum(map(sum, calls)) < 3 * full  # untrimmed, the 8 sequences alone are 8 times the context
    sequences = [lengths for lengths in calls if len(lengths) == len(responses)]
    assert sequences and all(max(lengths) < full / 8 for lengths in sequences)


@pytest.fixture(scope="module")
def recorded_scorer(tmp_path_factory) -> RewardScorer:
    config = tiny_config()
    tokenizer = build_tokenizer(config)
    inputs = InputSpec({"predictor": "recorded", "path": "fixations.parquet"}, 64)
    directory = tmp_path_factory.mktemp("recorded") / "model"
    save_reward_model(trained_looking(config, tokenizer), tokenizer, config, inputs, directory)
    return RewardScorer(directory)


def test_a_model_trained_on_recorded_gaze_is_served_with_fixations_on_every_response(recorded_scorer):
    client = TestClient(build_app(recorded_scorer, None))
    texts = ["Hi there.", "Hello, how are you?"]
    body = {
        "prompt": "Say hi.",
        "responses": [{"text": t, "fixations": [fixation(0), fixation(1, 300)]} for t in texts],
    }
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["rewards"]) == 2
    body["responses"][1] = texts[1]  # its fixations missing
    refused = client.post("/score", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["field"] == "responses.1.fixations"
    assert "recorded gaze" in refused.json()["detail"][0]["msg"]


class FailingOn:
    """A scorer whose forward pass fails on a response text, as a bug or an out-of-memory would."""

    def __init__(self, scorer: RewardScorer, poison: str) -> None:
        self.scorer, self.poison = scorer, poison

    def score(self, prompts, responses, contexts=None, gaze=None):
        if self.poison in responses:
            raise RuntimeError("CUDA out of memory (simulated)")
        return self.scorer.score(prompts, responses, contexts, gaze=gaze)


def test_one_failing_request_does_not_fail_the_others_of_its_batch(scorer):
    """score_batch is what the deployment's @serve.batch method runs over the batched requests."""
    jobs = [
        Job("Say hi.", None, ["Hi.", "Hello."], [None, None]),
        Job("Why?", None, ["boom"], [None]),
        Job("How?", None, ["Carefully."], [None]),
    ]
    results = score_batch(FailingOn(scorer, "boom"), jobs)
    assert isinstance(results[1], RuntimeError)
    for job, result in zip([jobs[0], jobs[2]], [results[0], results[2]], strict=True):
        expected = scorer.score([job.prompt] * len(job.texts), job.texts)
        np.testing.assert_allclose(result, expected, atol=1e-5, rtol=0)


def test_a_failing_request_is_a_500_without_a_traceback_and_the_next_one_is_served(scorer, monkeypatch):
    client = TestClient(build_app(FailingOnApp(scorer, "boom"), None))
    failed = client.post("/score", json={"prompt": "Why?", "responses": ["boom"]})
    assert failed.status_code == 500 and failed.json() == {"detail": "scoring this request failed"}
    assert client.post("/score", json={"prompt": "Why?", "responses": ["fine"]}).status_code == 200


class FailingOnApp(FailingOn):
    """The same, with what build_app reads off a scorer."""

    def __getattr__(self, name):
        return getattr(self.scorer, name)


@pytest.mark.parametrize(
    ("host", "allowed", "refused"),
    [
        ("127.0.0.1", False, False),
        ("127.8.0.1", False, False),
        ("::1", False, False),
        ("localhost", False, False),
        ("0.0.0.0", False, True),
        ("10.0.0.5", False, True),
        ("my-host.example", False, True),
        ("0.0.0.0", True, False),
    ],
)
def test_no_auth_is_refused_off_loopback_unless_explicitly_allowed(host, allowed, refused):
    if refused:
        with pytest.raises(ConfigError, match="--allow-unauthenticated-remote"):
            check_exposure(host, True, allowed)
    else:
        check_exposure(host, True, allowed)
    check_exposure(host, False, False)  # with a token, any host


def test_a_serve_config_without_auth_must_allow_it_explicitly(model_dir):
    with pytest.raises(ConfigError, match="allow_unauthenticated_remote"):
        app_builder({"model_dir": str(model_dir), "no_auth": True})
    app_builder({"model_dir": str(model_dir), "no_auth": True, "allow_unauthenticated_remote": True})


def test_the_served_model_must_match_its_manifest(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / "heads.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"heads\.safetensors has 0 bytes"):
        app_builder({"model_dir": str(copy), "no_auth": True, "allow_unauthenticated_remote": True})


def test_a_long_prompt_without_context_is_trimmed_and_scores_as_the_full_one(client, scorer):
    prompt = "Tell me everything: " + "and then what happened next " * 300
    responses = ["Nothing.", "A great deal, in fact."]
    context, trimmed, tokens = scorer.encoder.trim_context(None, prompt, responses)
    assert context is None and len(trimmed) < len(prompt) / 4 and tokens == [scorer.encoder.max_length] * 2
    response = client.post("/score", json={"prompt": prompt, "responses": responses}, headers=AUTH)
    assert response.status_code == 200, response.text
    expected = scorer.score([prompt] * 2, responses)
    np.testing.assert_allclose(response.json()["rewards"], expected, atol=1e-5, rtol=0)
