"""The Ray Serve deployment of the HTTP API: model replicas with dynamic request batching.

Each replica loads the model once (on the GPU Ray gave it, if any) and serves :mod:`gazerm.serve.api`;
concurrent ``/score`` requests wait up to ``batch_wait_ms`` to be gathered into one batch of at most
``max_batch_size`` requests, whose responses are scored together, ``max_batch_size`` per forward pass.

Two ways to start it: :func:`start` (``gazerm serve``: a local Ray or the cluster of ``RAY_ADDRESS``),
or a Serve config naming :func:`app_builder` (``import_path: gazerm.serve.deployment:app_builder``,
its ``args`` are :class:`ServeArgs`), as ``k8s/rayservice.yaml`` does.
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

from gazerm.errors import PathNotFoundError
from gazerm.runtime import init_ray
from gazerm.score import RewardScorer
from gazerm.serve.api import Job, build_app, load_token, score_jobs, token_digest

APP_NAME = "gazerm"


@serve.deployment
@serve.ingress()
class RewardService:
    """One replica: a loaded :class:`RewardScorer` behind the API, its requests batched."""

    def __init__(
        self, model_dir: str, digest: bytes | None, max_batch_size: int, batch_wait_s: float
    ) -> None:
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.scorer = RewardScorer(model_dir, batch_size=max_batch_size, device=device)
        self.digest = digest
        self.score.set_max_batch_size(max_batch_size)
        self.score.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch
    async def score(self, jobs: list[Job]) -> list[list]:
        # In a thread, so the replica keeps accepting requests (the next batch) during the forward passes.
        return await asyncio.to_thread(score_jobs, self.scorer, jobs)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this after ``__init__``: the app needs the loaded scorer."""
        return build_app(self.scorer, self.digest, self.score)


class ServeArgs(BaseModel):
    """The ``args`` of a Serve config application (the options of ``gazerm serve`` that are not Ray's:
    replicas and GPUs go in the config's ``deployments`` section)."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str
    token_file: str | None = None
    no_auth: bool = False
    max_batch_size: int = Field(16, ge=1)
    batch_wait_ms: float = Field(10.0, ge=0)


def application(
    model_dir: str | Path, token: str | None, max_batch_size: int, batch_wait_ms: float, **options: object
) -> Application:
    """The bound deployment; ``options`` are Serve deployment options (``num_replicas``, ...)."""
    path = Path(model_dir)
    if not (path / "config.yaml").is_file():
        raise PathNotFoundError(f"{model_dir}: not a saved reward model (no config.yaml)")
    # One batch running and the next one filling.
    deployment = RewardService.options(max_ongoing_requests=2 * max_batch_size, **options)
    digest = token_digest(token) if token is not None else None
    return deployment.bind(str(path.resolve()), digest, max_batch_size, batch_wait_ms / 1000)


def app_builder(args: dict) -> Application:
    """The Serve config entry point: the token from ``token_file`` or ``$GAZERM_SERVE_TOKEN`` where the
    builder runs (a Secret in the pod env on Kubernetes)."""
    settings = ServeArgs.model_validate(args)
    token_file = Path(settings.token_file) if settings.token_file else None
    token = load_token(token_file, settings.no_auth)
    return application(settings.model_dir, token, settings.max_batch_size, settings.batch_wait_ms)


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
) -> str:
    """Deploy the model on a local Ray (or the cluster of ``RAY_ADDRESS``) and return its URL once every
    replica has loaded it. ``gpus`` is per replica."""
    app = application(
        model_dir,
        token,
        max_batch_size,
        batch_wait_ms,
        num_replicas=replicas,
        ray_actor_options={"num_gpus": gpus},
    )
    init_ray()
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def serve_until_interrupted() -> None:
    """Block until Ctrl-C, then remove the application (other Serve applications on a cluster stay)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.delete(APP_NAME)
