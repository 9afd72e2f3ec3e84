"""The Ray Serve deployment of the HTTP API: model replicas with dynamic request batching.

Each replica loads the model once (on the GPU Ray gave it, if any) and serves :mod:`gazerm.serve.api`;
concurrent ``/score`` requests wait up to ``batch_wait_ms`` to be gathered into one batch of at most
``max_batch_size`` requests, whose responses are scored together, ``max_batch_size`` per forward pass.

A replica holds at most ``2 * max_batch_size`` requests (one batch running, the next filling); past
that ``max_queued_requests`` wait in each proxy's queue and any more are refused at once (503), and a
request not answered within ``request_timeout_s`` is ended by the proxy (408), so a flood queues in
bounded memory and no client waits forever.

Two ways to start it: :func:`start` (``gazerm serve``: a local Ray or the cluster of ``RAY_ADDRESS``),
or a Serve config naming :func:`app_builder` (``import_path: gazerm.serve.deployment:app_builder``,
its ``args`` are :class:`ServeArgs`), as ``k8s/rayservice.yaml`` does; there ``request_timeout_s`` is
the Serve config's ``http_options.request_timeout_s``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import ray
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from gazerm.errors import ConfigError
from gazerm.model.manifest import verify_model_dir
from gazerm.runtime import init_ray
from gazerm.score import RewardScorer
from gazerm.serve.api import (
    DEFAULT_LIMITS,
    MAX_REQUEST_CHARS,
    MAX_REQUEST_TOKENS,
    Job,
    Limits,
    build_app,
    load_token,
    score_batch,
    token_digest,
)

APP_NAME = "gazerm"
MAX_QUEUED_REQUESTS = 64  # per proxy, beyond what the replicas hold; more are refused with a 503
REQUEST_TIMEOUT_S = 60.0


@serve.deployment
@serve.ingress()
class RewardService:
    """One replica: a loaded :class:`RewardScorer` behind the API, its requests batched."""

    def __init__(
        self,
        model_dir: str,
        digest: bytes | None,
        max_batch_size: int,
        batch_wait_s: float,
        limits: dict | None = None,
    ) -> None:
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.scorer = RewardScorer(model_dir, batch_size=max_batch_size, device=device)
        self.digest = digest
        self.limits = Limits(**(limits or {}))
        self.score.set_max_batch_size(max_batch_size)
        self.score.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch
    async def score(self, jobs: list[Job]) -> list[list | Exception]:
        # In a thread, so the replica keeps accepting requests (the next batch) during the forward passes.
        # Per job its rewards or its exception: one failing request does not fail the batch.
        return await asyncio.to_thread(score_batch, self.scorer, jobs)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after ``__init__``: the app needs the loaded scorer."""
        return build_app(self.scorer, self.digest, self.score, self.limits)


class ServeArgs(BaseModel):
    """The ``args`` of a Serve config application (the options of ``gazerm serve`` that are not Ray's:
    replicas and GPUs go in the config's ``deployments`` section)."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str
    token_file: str | None = None
    no_auth: bool = False
    # A Serve config's service is reached over the network: no_auth needs this too.
    allow_unauthenticated_remote: bool = False
    max_batch_size: int = Field(16, ge=1)
    batch_wait_ms: float = Field(10.0, ge=0)
    max_queued_requests: int = Field(MAX_QUEUED_REQUESTS, ge=1)
    max_request_chars: int = Field(MAX_REQUEST_CHARS, ge=1)
    max_request_tokens: int = Field(MAX_REQUEST_TOKENS, ge=1)


def application(
    model_dir: str | Path,
    token: str | None,
    max_batch_size: int,
    batch_wait_ms: float,
    limits: Limits = DEFAULT_LIMITS,
    max_queued_requests: int = MAX_QUEUED_REQUESTS,
    **options: object,
) -> Application:
    """The bound deployment; ``options`` are Serve deployment options (``num_replicas``, ...). The model
    directory must match its manifest before anything starts."""
    path = Path(model_dir)
    verify_model_dir(path)
    # One batch running and the next one filling; more wait in the proxies' bounded queues.
    deployment = RewardService.options(
        max_ongoing_requests=2 * max_batch_size, max_queued_requests=max_queued_requests, **options
    )
    digest = token_digest(token) if token is not None else None
    limits_args = {
        "max_request_chars": limits.max_request_chars,
        "max_request_tokens": limits.max_request_tokens,
    }
    return deployment.bind(str(path.resolve()), digest, max_batch_size, batch_wait_ms / 1000, limits_args)


def app_builder(args: dict) -> Application:
    """The Serve config entry point: the token from ``token_file`` or ``$GAZERM_SERVE_TOKEN`` where the
    builder runs (a Secret in the pod env on Kubernetes)."""
    settings = ServeArgs.model_validate(args)
    if settings.no_auth and not settings.allow_unauthenticated_remote:
        raise ConfigError(
            "no_auth opens the served model to whoever reaches the cluster's Serve proxy: give a token, "
            "or set allow_unauthenticated_remote: true as well"
        )
    token_file = Path(settings.token_file) if settings.token_file else None
    token = load_token(token_file, settings.no_auth)
    return application(
        settings.model_dir,
        token,
        settings.max_batch_size,
        settings.batch_wait_ms,
        Limits(settings.max_request_chars, settings.max_request_tokens),
        settings.max_queued_requests,
    )


def start(
    model_dir: str | Path,
    token: str | None,
    *,
    replicas: int = 1,
    gpus: float = 0,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 16,
    batch_wait_ms: float = 10.0,
    max_queued_requests: int = MAX_QUEUED_REQUESTS,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    limits: Limits = DEFAULT_LIMITS,
) -> str:
    """Deploy the model on a local Ray (or the cluster of ``RAY_ADDRESS``) and return its URL once every
    replica has loaded it. ``gpus`` is per replica."""
    app = application(
        model_dir,
        token,
        max_batch_size,
        batch_wait_ms,
        limits,
        max_queued_requests,
        num_replicas=replicas,
        ray_actor_options={"num_gpus": gpus},
    )
    init_ray()
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": request_timeout_s})
    serve.run(app, name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def serve_until_interrupted() -> None:
    """Block until Ctrl-C, then remove the application (other Serve applications on a cluster stay)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.delete(APP_NAME)
