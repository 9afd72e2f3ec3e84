"""The HTTP API without Ray (FastAPI's TestClient): auth, rewards equal to RewardScorer's, recorded
fixations, and a 422 naming the field for every kind of malformed body."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from jinja2 import TemplateError

from gazerm.errors import ConfigError, PathNotFoundError
from gazerm.features.recorded import gaze_from_fixations
from gazerm.score import RewardScorer
from gazerm.serve.api import (
    MAX_BODY_BYTES,
    MAX_FIXATIONS,
    MAX_RESPONSES,
    TOKEN_ENV,
    FairTurns,
    Job,
    build_app,
    chunks,
    load_token,
    score_jobs,
    token_digest,
)
from tests.conftest import save_random_model
from tests.serve.conftest import AUTH, TOKEN

CONTEXT = [
    {"role": "user", "content": "Hello there."},
    {"role": "assistant", "content": "Hi! How can I help?"},
]
FIXATIONS = [  # one reader on "Knead the dough until smooth." (5 words), with a regression to word 1
    {"word_idx": 0, "onset": 0, "duration": 210},
    {"word_idx": 2, "onset": 240, "duration": 180},
    {"word_idx": 1, "onset": 450, "duration": 120.5},
    {"word_idx": 4, "onset": 600, "duration": 260},
]
BODY = {
    "prompt": "How do I bake bread?",
    "context": CONTEXT,
    "responses": [
        "Mix flour, water, yeast and salt.",
        {"text": "Knead the dough until smooth.", "fixations": FIXATIONS},
        {"text": "Bake it at a high temperature for about forty minutes."},
    ],
}


@pytest.fixture(scope="module")
def client(scorer) -> TestClient:
    return TestClient(build_app(scorer, token_digest(TOKEN)))


def recorded(text: str, fixations: list[dict]):
    """The word gaze gazerm.features.recorded computes from the fixations, for the expected rewards."""
    table = pl.DataFrame([{"text_id": "t", **f} for f in fixations]).with_columns(
        pl.col("onset", "duration").cast(float)
    )
    return gaze_from_fixations(table, {"t": text})["t"]


def test_healthz_needs_no_token(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "basic", "no-scheme"],
)
def test_score_needs_the_token(client, headers):
    for body in (BODY, {"not": "checked before auth"}):
        response = client.post("/score", json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json() == {"detail": "missing or wrong bearer token"}


def test_rewards_are_the_scorers_in_response_order(client, scorer):
    response = client.post("/score", json=BODY, headers=AUTH)
    assert response.status_code == 200, response.text
    rewards = response.json()["rewards"]

    texts = [BODY["responses"][0], BODY["responses"][1]["text"], BODY["responses"][2]["text"]]
    expected = scorer.score(
        [BODY["prompt"]] * 3, texts, [CONTEXT] * 3, gaze=[None, recorded(texts[1], FIXATIONS), None]
    )
    np.testing.assert_allclose(rewards, expected, atol=1e-5, rtol=0)
    predicted = scorer.score([BODY["prompt"]] * 3, texts, [CONTEXT] * 3)
    assert rewards[1] != pytest.approx(predicted[1], abs=1e-4)  # the recorded gaze was used
    np.testing.assert_allclose([rewards[0], rewards[2]], predicted[[0, 2]], atol=1e-5, rtol=0)


def test_score_jobs_splits_one_flat_batch_back_per_request(scorer):
    jobs = [
        Job("Say hi.", None, ["Hi.", "Hello there, friend."], [None, None]),
        Job("How do I bake bread?", CONTEXT, ["Mix flour and water."], [None]),
        Job("Why?", None, ["Because.", "No idea.", "It depends on the weather."], [None] * 3),
    ]
    together = score_jobs(scorer, jobs)
    assert [len(rewards) for rewards in together] == [2, 1, 3]
    for job, rewards in zip(jobs, together, strict=True):
        np.testing.assert_allclose(rewards, score_jobs(scorer, [job])[0], atol=1e-5, rtol=0)


def test_multi_output_model_gives_a_list_per_response(tmp_path):
    scorer = RewardScorer(save_random_model(tmp_path / "m", max_length=64, num_outputs=2))
    response = TestClient(build_app(scorer, None)).post(
        "/score", json={"prompt": "Hi?", "responses": ["Hi.", "Yo."]}
    )
    assert response.status_code == 200, response.text
    rewards = response.json()["rewards"]
    np.testing.assert_allclose(rewards, scorer.score(["Hi?"] * 2, ["Hi.", "Yo."]), atol=1e-5, rtol=0)
    assert np.shape(rewards) == (2, 2)


# Python's JSON parser (and so FastAPI's) accepts Infinity and NaN.
INFINITE_ONSET = '{"word_idx": 0, "onset": Infinity, "duration": 200}'


def with_response(**changes) -> dict:
    return {"prompt": "Why?", "responses": [{"text": "Because it is.", **changes}]}


def fixation(**changes) -> dict:
    return {"word_idx": 0, "onset": 0, "duration": 200, **changes}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"responses": ["Hi."]}, "prompt"),
        ({"prompt": "Why?", "responses": []}, "responses"),
        ({"prompt": "Why?"}, "responses"),
        ({"prompt": 3, "responses": ["Hi."]}, "prompt"),
        ({"prompt": "   ", "responses": ["Hi."]}, "prompt"),
        ({"prompt": "Why?", "responses": "Hi."}, "responses"),
        ({"prompt": "Why?", "responses": [3]}, "responses.0"),
        ({"prompt": "Why?", "responses": ["Hi.", ""]}, "responses.1.text"),
        ({"prompt": "Why?", "responses": ["Hi."] * (MAX_RESPONSES + 1)}, "responses"),
        ({"prompt": "Why?", "responses": ["Hi."], "temperature": 0.5}, "temperature"),
        ({"prompt": "Why?", "responses": ["Hi."], "context": "Hello"}, "context"),
        (
            {"prompt": "Why?", "responses": ["Hi."], "context": [{"role": "robot", "content": "x"}]},
            "context.0.role",
        ),
        ({"prompt": "Why?", "responses": ["Hi."], "context": [{"role": "user"}]}, "context.0.content"),
        (with_response(score=1), "responses.0.score"),
        (with_response(fixations=[]), "responses.0.fixations"),
        (with_response(fixations=[fixation(duration=-5)]), "responses.0.fixations.0.duration"),
        (with_response(fixations=[fixation(), fixation(onset=-1)]), "responses.0.fixations.1.onset"),
        (with_response(fixations=[fixation(duration="200")]), "responses.0.fixations.0.duration"),
        (with_response(fixations=[fixation(word_idx=1.0)]), "responses.0.fixations.0.word_idx"),
        (with_response(fixations=[fixation(word_idx=3)]), "responses.0.fixations"),  # the text has 3 words
        (with_response(fixations=[{"word_idx": 0, "duration": 200}]), "responses.0.fixations.0.onset"),
        (
            f'{{"prompt": "Why?", "responses": [{{"text": "Hi.", "fixations": [{INFINITE_ONSET}]}}]}}',
            "responses.0.fixations.0.onset",
        ),
        ('{"prompt": "Why?", "responses": ["Hi', "body"),
        ("", "body"),
        ([], "body"),
    ],
)
def test_malformed_body_is_a_422_naming_the_field(client, body, field):
    kind = {"content": body} if isinstance(body, str) else {"json": body}
    response = client.post("/score", **kind, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert field in [problem["field"] for problem in problems], problems
    assert all(problem["msg"] and "input" not in problem for problem in problems)


def test_fixations_for_a_model_without_gaze_are_a_422(tmp_path):
    scorer = RewardScorer(save_random_model(tmp_path / "m", predictor="none", fusion="none"))
    client = TestClient(build_app(scorer, None))
    response = client.post("/score", json=with_response(fixations=[fixation()]))
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "responses.0.fixations"
    assert client.post("/score", json=with_response()).status_code == 200


def test_a_context_the_chat_template_refuses_is_a_422(client, scorer, monkeypatch):
    class Refusing:
        def prefix(self, context, prompt):
            raise TemplateError("Conversation roles must alternate user/assistant/user/assistant/...")

    monkeypatch.setattr(scorer.encoder, "template", Refusing())
    response = client.post("/score", json=BODY, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "context"
    assert "must alternate" in response.json()["detail"][0]["msg"]


def test_load_token_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, f"  {TOKEN}\n")
    assert load_token(None, no_auth=False) == TOKEN
    (tmp_path / "token").write_text("from-the-file-0123456789-0123456789\n")
    assert load_token(tmp_path / "token", no_auth=False) == "from-the-file-0123456789-0123456789"


@pytest.mark.parametrize(
    ("env", "file_text", "error", "message"),
    [
        (None, None, ConfigError, TOKEN_ENV),
        ("", None, ConfigError, TOKEN_ENV),
        ("short", None, ConfigError, "shorter than 32"),
        ("a-token-of-thirty-one-characters"[:31], None, ConfigError, "shorter than 32"),
        (TOKEN, "\n", ConfigError, "no API token"),
        (None, "missing", PathNotFoundError, "token file not found"),
    ],
)
def test_starting_without_a_usable_token_is_refused(tmp_path, monkeypatch, env, file_text, error, message):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(TOKEN_ENV, env)
    token_file = None
    if file_text is not None:
        token_file = tmp_path / "token"
        if file_text != "missing":
            token_file.write_text(file_text)
    with pytest.raises(error, match=message):
        load_token(token_file, no_auth=False)


def test_no_auth_must_be_explicit_and_warns(tmp_path, monkeypatch, caplog, scorer):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with caplog.at_level(logging.WARNING, logger="gazerm.serve.api"):
        assert load_token(None, no_auth=True) is None
    assert "authentication is OFF" in caplog.text
    with pytest.raises(ConfigError, match="contradict"):
        load_token(tmp_path / "token", no_auth=True)
    open_app = TestClient(build_app(scorer, None))
    assert open_app.post("/score", json={"prompt": "Why?", "responses": ["Hi."]}).status_code == 200


def test_one_request_cannot_hold_a_replica_with_a_huge_body_or_too_many_fixations(client):
    declared = client.post(
        "/score", headers={**AUTH, "content-length": str(MAX_BODY_BYTES + 1)}, content=b"{}"
    )
    assert declared.status_code == 413
    per_response = MAX_FIXATIONS // 5 + 1  # each response within its own limit, the request over
    fixations = [{"word_idx": 0, "onset": 10.0 * i, "duration": 5} for i in range(per_response)]
    body = {"prompt": "Why?", "responses": [{"text": "Because.", "fixations": fixations}] * 5}
    response = client.post("/score", headers=AUTH, json=body)
    assert response.status_code == 422
    assert "fixations in one request" in response.json()["detail"][0]["msg"]


def test_chunks_hold_at_most_the_responses_and_tokens_of_a_turn():
    job = Job("Why?", None, [f"r{i}" for i in range(7)], [None] * 7, (300, 300, 100, 100, 100, 600, 50))
    parts = chunks(job, max_responses=3, max_tokens=512)
    assert [part.texts for part in parts] == [["r0"], ["r1", "r2", "r3"], ["r4"], ["r5"], ["r6"]]
    assert [part.tokens for part in parts] == [(300,), (300, 100, 100), (100,), (600,), (50,)]
    assert [p.texts for p in chunks(Job("Why?", None, ["a", "b", "c"], [None] * 3), 2)] == [["a", "b"], ["c"]]


def test_fair_turns_let_the_least_served_waiter_go_next():
    """A small request that arrives while a large one is being scored waits for one chunk, not all."""

    async def scenario() -> list[str]:
        turns, order = FairTurns(), []

        async def request(name: str, chunk_count: int, tokens_per_chunk: int, delay: float) -> None:
            await asyncio.sleep(delay)
            served = 0
            for index in range(chunk_count):
                async with turns.turn(served):
                    order.append(f"{name}{index}")
                    await asyncio.sleep(0.01)
                served += tokens_per_chunk

        await asyncio.gather(request("big", 4, 512, 0), request("small", 1, 40, 0.005))
        return order

    assert asyncio.run(scenario()) == ["big0", "small0", "big1", "big2", "big3"]


@pytest.mark.parametrize("when", ["waiting", "handed-the-turn"])
def test_a_cancelled_waiter_does_not_keep_the_turn(when):
    """A client that goes away while queued, or just as its turn comes, must not block everyone after."""

    async def scenario() -> bool:
        turns = FairTurns()
        async with turns.turn(0):
            waiter = asyncio.create_task(_take(turns))
            await asyncio.sleep(0)
            if when == "waiting":
                waiter.cancel()
        if when == "handed-the-turn":
            waiter.cancel()
        await asyncio.sleep(0)
        return await asyncio.wait_for(_take(turns), 1)

    assert asyncio.run(scenario())


async def _take(turns) -> bool:
    async with turns.turn(0):
        return True
