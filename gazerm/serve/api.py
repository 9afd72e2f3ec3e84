"""The HTTP API of a served reward model: request bodies, bearer-token auth and the FastAPI app.

``POST /score`` takes one prompt (with optional earlier ``context`` turns) and its responses::

    {"prompt": "How do I bake bread?",
     "context": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}],
     "responses": ["Mix flour and water.",
                   {"text": "Knead it well.",
                    "fixations": [{"word_idx": 0, "onset": 0, "duration": 210},
                                  {"word_idx": 1, "onset": 240, "duration": 180}]}]}

and returns ``{"rewards": [r0, r1]}`` in response order (a list per response for a multi-output
head). A response is a string or ``{"text", "fixations"}``: ``fixations`` are one reader's recorded
fixations on it, ``word_idx`` numbering the response's whitespace words from 0
(:func:`gazerm.features.base.word_spans`), ``onset`` and ``duration`` in ms; they become the five
reading measures with :mod:`gazerm.features.recorded`, exactly as recorded gaze does in ``prepare``.
A response without fixations gets the gaze the model's own predictor gives it, as in ``gazerm score``.

``GET /healthz`` answers 200 without authentication once the model is loaded; every other path
needs ``Authorization: Bearer <token>`` unless the service was started with auth switched off.
A malformed body is a 422 whose ``detail`` names each bad field (``responses.0.fixations.2.duration``).

Nothing here needs Ray: :func:`build_app` wraps a :class:`RewardScorer` and scores each request
in-process unless it is handed a batched scoring function (what the Ray Serve deployment does).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from jinja2 import TemplateError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gazerm.errors import ConfigError, GazermError, PathNotFoundError
from gazerm.features.base import WordGaze, word_spans
from gazerm.features.recorded import gaze_from_fixations
from gazerm.model.templates import Context
from gazerm.score import RewardScorer

log = logging.getLogger(__name__)

TOKEN_ENV = "GAZERM_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16  # a guessable token is no authentication
# Per-request limits: one request must not be able to hold a replica for long.
MAX_RESPONSES = 64
MAX_TEXT_CHARS = 32_000
MAX_TURNS = 64
MAX_FIXATIONS = 20_000  # per request, all responses together
MAX_BODY_BYTES = 8 * 2**20  # larger bodies are refused before they are read
MAX_FIXATION_MS = 60_000.0
HEALTH_PATH = "/healthz"


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)]


class _Body(BaseModel):
    """Strict JSON: unknown fields, type coercions ("3" for 3) and NaN/Infinity (which Python's JSON
    parser accepts) are errors, not guesses."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Turn(_Body):
    role: Literal["system", "user", "assistant", "human", "prompter"]
    content: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class Fixation(_Body):
    """One fixation of the reader on word ``word_idx`` of the response; times in ms."""

    word_idx: int = Field(ge=0)
    onset: float = Field(ge=0)
    duration: float = Field(gt=0, le=MAX_FIXATION_MS)


class ResponseItem(_Body):
    text: Text
    fixations: Annotated[list[Fixation], Field(min_length=1, max_length=MAX_FIXATIONS)] | None = None

    @field_validator("fixations")
    @classmethod
    def _on_the_text(cls, fixations: list[Fixation] | None, info: ValidationInfo) -> list[Fixation] | None:
        """Every fixation must be on a word of the text (checked only when the text itself is valid)."""
        if fixations is None or "text" not in info.data:
            return fixations
        words = len(word_spans(info.data["text"]))
        for index, fixation in enumerate(fixations):
            if fixation.word_idx >= words:
                raise ValueError(
                    f"fixation {index}: word_idx {fixation.word_idx} but the text has {words} words"
                )
        return fixations


class ScoreRequest(_Body):
    prompt: Text
    context: Annotated[list[Turn], Field(max_length=MAX_TURNS)] | None = None
    responses: Annotated[list[ResponseItem], Field(min_length=1, max_length=MAX_RESPONSES)]

    @field_validator("responses", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        """A plain string is a response without fixations."""
        if isinstance(value, list):
            return [{"text": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _fixations_in_bounds(self) -> ScoreRequest:
        """The fixations of all responses together: one request must not hold a replica for long."""
        total = sum(len(response.fixations or []) for response in self.responses)
        if total > MAX_FIXATIONS:
            raise ValueError(f"{total} fixations in one request; at most {MAX_FIXATIONS}")
        return self


class ScoreResponse(BaseModel):
    rewards: list[float] | list[list[float]]


@dataclass(frozen=True)
class Job:
    """One request as the scorer takes it: responses sharing a prompt and context, their recorded gaze."""

    prompt: str
    context: Context
    texts: list[str]
    gaze: list[WordGaze | None]


ScoreFn = Callable[[Job], Awaitable[list]]


def score_jobs(scorer: RewardScorer, jobs: list[Job]) -> list[list]:
    """Each job's rewards, from one ``scorer.score`` call over all their responses: concurrent requests
    share forward passes."""
    flat = [(job, text, gaze) for job in jobs for text, gaze in zip(job.texts, job.gaze, strict=True)]
    rewards = scorer.score(
        [job.prompt for job, _, _ in flat],
        [text for _, text, _ in flat],
        [job.context for job, _, _ in flat],
        gaze=[gaze for _, _, gaze in flat],
    ).tolist()
    split, start = [], 0
    for job in jobs:
        split.append(rewards[start : start + len(job.texts)])
        start += len(job.texts)
    return split


def recorded_gaze(responses: list[ResponseItem]) -> list[WordGaze | None]:
    """Per response, the word gaze of its fixations (one reader), or None where it has none."""
    read = {str(i): r for i, r in enumerate(responses) if r.fixations}
    if not read:
        return [None] * len(responses)
    table = pl.DataFrame(
        [
            {"text_id": i, "word_idx": f.word_idx, "onset": f.onset, "duration": f.duration}
            for i, response in read.items()
            for f in response.fixations or []
        ],
        schema={"text_id": pl.String, "word_idx": pl.Int64, "onset": pl.Float64, "duration": pl.Float64},
    )
    gaze = gaze_from_fixations(table, {i: response.text for i, response in read.items()})
    return [gaze.get(str(i)) for i in range(len(responses))]


def _invalid(field: tuple[str | int, ...], message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *field), "msg": message, "type": "value_error"}])


def make_job(scorer: RewardScorer, request: ScoreRequest) -> Job:
    """The request as a :class:`Job`, or a 422 for what only this model can reject (gaze for a model
    without gaze fusion, a context its chat template refuses): one bad request must not fail a batch."""
    if scorer.predictor is None:
        for index, response in enumerate(request.responses):
            if response.fixations:
                raise _invalid(("responses", index, "fixations"), "this model does not use gaze")
    context = [turn.model_dump() for turn in request.context] if request.context is not None else None
    try:
        scorer.encoder.template.prefix(context, request.prompt)
    except (TemplateError, GazermError) as error:
        raise _invalid(("context",), f"the model's chat template refuses it: {error}") from error
    texts = [response.text for response in request.responses]
    return Job(request.prompt, context, texts, recorded_gaze(request.responses))


def load_token(token_file: Path | None, no_auth: bool) -> str | None:
    """The bearer token: ``token_file``'s content, else ``$GAZERM_SERVE_TOKEN``; None only with ``no_auth``.
    Starting without one is refused, so a service is never open by accident."""
    if no_auth:
        if token_file is not None:
            raise ConfigError("--no-auth and --token-file contradict each other: give one")
        log.warning("authentication is OFF: anyone who can reach the port can use the model")
        return None
    if token_file is not None:
        if not token_file.is_file():
            raise PathNotFoundError(f"{token_file}: token file not found")
        token = token_file.read_text().strip()
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(
            f"no API token: set {TOKEN_ENV} or give --token-file (or serve without auth: --no-auth)"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the API token is shorter than {MIN_TOKEN_CHARS} characters; use a random one")
    return token


def token_digest(token: str) -> bytes:
    """What the service keeps of the token: its SHA-256, so the token itself is never part of the
    deployment's arguments (which Ray stores and shows); replicas compare digests."""
    return hashlib.sha256(token.encode()).digest()


def authorized(header: str | None, digest: bytes) -> bool:
    """Whether an ``Authorization`` header carries the token (compared in constant time)."""
    scheme, _, presented = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token_digest(presented.strip()), digest)


def _field(error: dict[str, Any]) -> str:
    """``("body", "responses", 0, "text")`` → ``responses.0.text``; the body itself is ``body``."""
    location = error["loc"][1:] if error["loc"][:1] == ("body",) else error["loc"]
    if error["type"] == "json_invalid" or not location:
        return "body"
    return ".".join(map(str, location))


def build_app(scorer: RewardScorer, digest: bytes | None, score: ScoreFn | None = None) -> FastAPI:
    """The API around a loaded scorer. ``digest`` is :func:`token_digest` of the token (None: no auth);
    ``score`` scores one :class:`Job` (default: in a thread of this process, unbatched)."""
    app = FastAPI(title="gazerm reward model", docs_url=None, redoc_url=None, openapi_url=None)

    one_at_a_time = asyncio.Lock()  # one model and tokenizer: requests take turns

    async def in_process(job: Job) -> list:
        async with one_at_a_time:
            return (await asyncio.to_thread(score_jobs, scorer, [job]))[0]

    scoring = score or in_process

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Callable) -> Any:
        """Before anything is read: an unauthenticated client learns nothing about the body format."""
        public = digest is None or request.url.path == HEALTH_PATH
        if not public and not authorized(request.headers.get("authorization"), digest):
            return JSONResponse(
                {"detail": "missing or wrong bearer token"}, 401, headers={"WWW-Authenticate": "Bearer"}
            )
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"the body must declare at most {MAX_BODY_BYTES} bytes"}, 413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        """Each problem with the field it is in; the offending input is not echoed back."""
        problems = [{"field": _field(e), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        return JSONResponse({"detail": problems}, 422)

    @app.get(HEALTH_PATH)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/score")
    async def score_request(body: ScoreRequest) -> ScoreResponse:
        job = await asyncio.to_thread(make_job, scorer, body)
        return ScoreResponse(rewards=await scoring(job))

    return app
