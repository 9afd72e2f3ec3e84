"""The Ray Serve deployment: its Serve config entry point (no Ray needed), and the real deployment on a
loopback port (slow): auth, and concurrent requests batched together with the rewards RewardScorer gives.
Serve is shut down afterwards; the session's Ray stays up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from gazerm.errors import ConfigError
from gazerm.runtime import free_port
from gazerm.serve.api import TOKEN_ENV, Limits, authorized, token_digest
from gazerm.serve.deployment import MAX_QUEUED_REQUESTS, app_builder, start
from tests.serve.conftest import AUTH, TOKEN
from tests.serve.test_api import BODY, CONTEXT, recorded

# Four requests of different shapes; with max_batch_size 4 and a one-minute batch wait, they come back
# within seconds only if the replica scored them as one batch.
REQUESTS = [
    BODY,
    {"prompt": "Say hi.", "responses": ["Hi."]},
    {"prompt": "Why is the sky blue?", "responses": ["Rayleigh scattering.", "Because it is.", "Light."]},
    {
        "prompt": "Describe a fox.",
        "context": CONTEXT,
        "responses": ["The quick brown fox jumps over the dog."],
    },
]


def expected_rewards(scorer, body: dict) -> np.ndarray:
    items = [r if isinstance(r, dict) else {"text": r} for r in body["responses"]]
    texts = [item["text"] for item in items]
    gaze = [recorded(item["text"], item["fixations"]) if "fixations" in item else None for item in items]
    context = body.get("context")
    return scorer.score([body["prompt"]] * len(texts), texts, [context] * len(texts), gaze=gaze)


async def post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as client:
        return await asyncio.gather(*(client.post("/score", json=body) for body in bodies))


@pytest.mark.slow  # starts Ray Serve on the session's Ray
def test_served_model_authenticates_and_batches_concurrent_requests(ray_local, model_dir, scorer):
    from ray import serve

    url = start(model_dir, TOKEN, port=free_port(), max_batch_size=len(REQUESTS), batch_wait_ms=60_000)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.post(f"{url}/score", json=BODY).status_code == 401
        wrong = {"Authorization": f"Bearer {TOKEN}x"}
        assert httpx.post(f"{url}/score", json=BODY, headers=wrong).status_code == 401
        invalid = httpx.post(f"{url}/score", json={"prompt": "Why?", "responses": []}, headers=AUTH)
        assert invalid.status_code == 422 and invalid.json()["detail"][0]["field"] == "responses"

        started = time.monotonic()
        responses = asyncio.run(post_all(url, REQUESTS))
        elapsed = time.monotonic() - started

        assert [r.status_code for r in responses] == [200] * len(REQUESTS), [r.text for r in responses]
        assert elapsed < 30, f"{elapsed:.0f}s: the requests waited for a batch instead of forming one"
        for body, response in zip(REQUESTS, responses, strict=True):
            rewards = response.json()["rewards"]
            np.testing.assert_allclose(rewards, expected_rewards(scorer, body), atol=1e-5, rtol=0)
    finally:
        serve.shutdown()


def test_app_builder_takes_the_token_from_the_environment_and_passes_on_only_its_digest(
    model_dir, monkeypatch
):
    """The Serve config entry point (k8s/rayservice.yaml); binding needs no Ray."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        app_builder({"model_dir": str(model_dir)})
    with pytest.raises(ValidationError, match="max_batch"):
        app_builder({"model_dir": str(model_dir), "max_batch": 4})

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    bound = app_builder(
        {"model_dir": str(model_dir), "max_batch_size": 4, "batch_wait_ms": 5, "max_request_chars": 900}
    )._bound_deployment
    path, digest, *rest = bound.init_args
    assert (path, rest) == (str(model_dir.resolve()), [4, 0.005, asdict(Limits(900))])
    assert authorized(f"Bearer {TOKEN}", digest) and not authorized(f"Bearer {TOKEN}x", digest)
    assert TOKEN.encode() not in digest and digest != token_digest(TOKEN)  # salted: new on every start
    assert bound.max_ongoing_requests == 8 and bound.max_queued_requests == MAX_QUEUED_REQUESTS
