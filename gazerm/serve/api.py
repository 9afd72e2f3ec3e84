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

A model trained on recorded gaze (``inputs.json`` predictor ``recorded``) has no predictor: every
response needs its fixations. Fixations must not overlap in time, last (0, 5000] ms, sit on a word of
the text, and number at most :data:`MAX_FIXATIONS_PER_RESPONSE` per response and :data:`MAX_FIXATIONS`
per request.

``GET /healthz`` answers 200 without authentication once the model is loaded; every other path
needs ``Authorization: Bearer <token>`` unless the service was started with auth switched off.
A malformed body is a 422 whose ``detail`` names each bad field (``responses.0.fixations.2.duration``).

One request must not be able to hold a replica: the body is counted as it streams in (413 past
:data:`MAX_BODY_BYTES`, declared or chunked), each field is bounded, and the request as a whole has a
character budget and a token budget (:class:`Limits`; ``gazerm serve --max-request-chars/-tokens``).
The context is trimmed from the left before any response is tokenized: the turns (and the start of the
first kept one) that the model's left truncation would cut anyway are dropped, found by tokenizing the
prefix once, so each response is tokenized with at most ``max_length`` tokens of prefix and the rewards
are the ones the full context gives. In process, a request is scored in chunks (``batch_size`` responses,
:data:`TURN_TOKENS` tokens at most), and between chunks the request served the fewest tokens so far goes
next (:class:`FairTurns`): a large request delays a small one by one chunk at most.

Nothing here needs Ray: :func:`build_app` wraps a :class:`RewardScorer` and scores each request
in-process unless it is handed a batched scoring function (what the Ray Serve deployment does).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import ipaddress
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import pairwise
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
MIN_TOKEN_CHARS = 32  # a guessable token is no authentication
MAX_PRESENTED_TOKEN_CHARS = 1024  # a longer Authorization header is wrong without being hashed
# The token's digest: PBKDF2-HMAC-SHA256 with a random salt. The token is long and random, so the
# iterations only need to make the digest useless to precompute, not slow to brute-force.
_DIGEST_SALT_BYTES = 16
_DIGEST_ITERATIONS = 2_000
# Per-request limits: one request must not be able to hold a replica for long.
MAX_RESPONSES = 64
MAX_TEXT_CHARS = 32_000
MAX_TURNS = 64
MAX_FIXATIONS = 20_000  # per request, all responses together
MAX_FIXATIONS_PER_RESPONSE = 5_000
MAX_BODY_BYTES = 8 * 2**20  # larger bodies are refused as they stream in
MAX_FIXATION_MS = 5_000.0
MAX_REQUEST_CHARS = 200_000  # prompt, context and responses together (default of --max-request-chars)
MAX_REQUEST_TOKENS = 65_536  # what the model reads for all responses (default of --max-request-tokens)
# In process, a request is scored in chunks of at most this many tokens, other requests taking turns.
TURN_TOKENS = 512
HEALTH_PATH = "/healthz"
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Limits:
    """What one request may cost: its characters (prompt, context turns and responses together) and its
    tokens (per response the prefix and the response, at most the model's ``max_length``, summed)."""

    max_request_chars: int = MAX_REQUEST_CHARS
    max_request_tokens: int = MAX_REQUEST_TOKENS


DEFAULT_LIMITS = Limits()


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
    fixations: (
        Annotated[list[Fixation], Field(min_length=1, max_length=MAX_FIXATIONS_PER_RESPONSE)] | None
    ) = None

    @field_validator("fixations")
    @classmethod
    def _on_the_text(cls, fixations: list[Fixation] | None, info: ValidationInfo) -> list[Fixation] | None:
        """Every fixation must be on a word of the text (checked only when the text itself is valid), and
        one reader's fixations must not overlap in time."""
        if fixations is None or "text" not in info.data:
            return fixations
        words = len(word_spans(info.data["text"]))
        for index, fixation in enumerate(fixations):
            if fixation.word_idx >= words:
                raise ValueError(
                    f"fixation {index}: word_idx {fixation.word_idx} but the text has {words} words"
                )
        by_onset = sorted(range(len(fixations)), key=lambda i: fixations[i].onset)
        for earlier, later in pairwise(by_onset):
            end = fixations[earlier].onset + fixations[earlier].duration
            if fixations[later].onset < end:
                raise ValueError(
                    f"fixation {later} starts at {fixations[later].onset:g} ms, before fixation {earlier} "
                    f"ends ({end:g} ms): one reader's fixations cannot overlap"
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


def request_chars(request: ScoreRequest) -> int:
    """The characters of a request's texts: prompt, context turns and responses."""
    turns = sum(len(turn.content) for turn in request.context or [])
    return len(request.prompt) + turns + sum(len(response.text) for response in request.responses)


class ScoreResponse(BaseModel):
    rewards: list[float] | list[list[float]]


@dataclass(frozen=True)
class Job:
    """One request as the scorer takes it: responses sharing a prompt and context, their recorded gaze."""

    prompt: str
    context: Context
    texts: list[str]
    gaze: list[WordGaze | None]
    tokens: tuple[int, ...] = ()  # per response, what the model reads (when known)


ScoreFn = Callable[[Job], Awaitable["list | Exception"]]


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


def score_batch(scorer: RewardScorer, jobs: list[Job]) -> list[list | Exception]:
    """What a batch of concurrent requests gets (the Ray Serve deployment's ``@serve.batch``): each
    job's rewards, or the exception scoring that job alone raised. One failing request does not fail
    the others: when the batch fails, every job is scored on its own."""
    try:
        return list(score_jobs(scorer, jobs))
    except Exception as error:
        if len(jobs) == 1:
            log.exception("scoring a request failed")
            return [error]
    results: list[list | Exception] = []
    for job in jobs:
        try:
            results.append(score_jobs(scorer, [job])[0])
        except Exception as error:
            log.exception("scoring a request of a batch failed")
            results.append(error)
    return results


def chunks(job: Job, max_responses: int, max_tokens: int = TURN_TOKENS) -> list[Job]:
    """The job as jobs of the same prompt and context, each of at most ``max_responses`` responses and
    (where the job knows its responses' tokens) ``max_tokens`` tokens, at least one response."""
    tokens = job.tokens or (0,) * len(job.texts)
    parts, start = [], 0
    while start < len(job.texts):
        end, total = start + 1, tokens[start]
        while end < len(job.texts) and end - start < max_responses and total + tokens[end] <= max_tokens:
            total += tokens[end]
            end += 1
        parts.append(
            Job(job.prompt, job.context, job.texts[start:end], job.gaze[start:end], tuple(tokens[start:end]))
        )
        start = end
    return parts


class FairTurns:
    """Requests taking turns at one model: whoever waits with the fewest tokens served so far goes next
    (least attained service), so a small request waits for at most the one chunk running, never for the
    rest of a large request."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._arrivals = 0

    @asynccontextmanager
    async def turn(self, served: int) -> AsyncIterator[None]:
        if self._busy or self._waiting:
            ready = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (served, self._arrivals, ready))
            self._arrivals += 1
            try:
                await ready
            except asyncio.CancelledError:
                if ready.done() and not ready.cancelled():  # the turn was handed over: pass it on
                    self._release()
                raise
        self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._busy = False
        while self._waiting:
            _, _, ready = heapq.heappop(self._waiting)
            if not ready.done():
                ready.set_result(None)
                self._busy = True  # on the woken waiter's behalf: no newcomer slips in before it
                return


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


def make_job(scorer: RewardScorer, request: ScoreRequest, limits: Limits = DEFAULT_LIMITS) -> Job:
    """The request as a :class:`Job`, or a 422 for what only this model can reject (gaze for a model
    without gaze fusion, a response without fixations for a model trained on recorded gaze, a context its
    chat template refuses, a request over the token budget): one bad request must not fail a batch. The
    context is trimmed from the left as the model's truncation would cut it, before any response is
    tokenized (:meth:`SequenceEncoder.trim_context`)."""
    chars = request_chars(request)
    if chars > limits.max_request_chars:
        raise _invalid((), f"{chars} characters in one request; at most {limits.max_request_chars}")
    for index, response in enumerate(request.responses):
        if scorer.recorded_only and not response.fixations:
            raise _invalid(
                ("responses", index, "fixations"),
                "this model learnt from recorded gaze: every response needs its reader's fixations",
            )
        if scorer.model.projector is None and response.fixations:
            raise _invalid(("responses", index, "fixations"), "this model does not use gaze")
    context = [turn.model_dump() for turn in request.context] if request.context is not None else None
    texts = [response.text for response in request.responses]
    try:
        context, prompt, tokens = scorer.encoder.trim_context(context, request.prompt, texts)
    except (TemplateError, GazermError) as error:
        raise _invalid(("context",), f"the model's chat template refuses it: {error}") from error
    if sum(tokens) > limits.max_request_tokens:
        raise _invalid(
            ("responses",),
            f"{sum(tokens)} tokens to score in one request; at most {limits.max_request_tokens}",
        )
    return Job(prompt, context, texts, recorded_gaze(request.responses), tuple(tokens))


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


def token_digest(token: str, salt: bytes | None = None) -> bytes:
    """What the service keeps of the token: a random salt and the token's salted PBKDF2-SHA256, so the
    token itself is never part of the deployment's arguments (which Ray stores and shows), and the same
    token gives a different digest on every start. Replicas derive the presented token's with the salt."""
    salt = salt if salt is not None else os.urandom(_DIGEST_SALT_BYTES)
    return salt + hashlib.pbkdf2_hmac("sha256", token.encode(), salt, _DIGEST_ITERATIONS)


def authorized(header: str | None, digest: bytes) -> bool:
    """Whether an ``Authorization`` header carries the token (the digests compared in constant time)."""
    scheme, _, presented = (header or "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented or len(presented) > MAX_PRESENTED_TOKEN_CHARS:
        return False
    return hmac.compare_digest(token_digest(presented, digest[:_DIGEST_SALT_BYTES]), digest)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: 127.0.0.0/8, ::1 or ``localhost``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, no_auth: bool, allow_unauthenticated_remote: bool) -> None:
    """Serving without auth is refused on any address but loopback unless explicitly allowed."""
    if no_auth and not is_loopback(host) and not allow_unauthenticated_remote:
        raise ConfigError(
            f"--no-auth on {host}, which is not a loopback address, opens the model to the network: "
            "serve on 127.0.0.1, give a token, or add --allow-unauthenticated-remote"
        )


def _field(error: dict[str, Any]) -> str:
    """``("body", "responses", 0, "text")`` → ``responses.0.text``; the body itself is ``body``."""
    location = error["loc"][1:] if error["loc"][:1] == ("body",) else error["loc"]
    if error["type"] == "json_invalid" or not location:
        return "body"
    return ".".join(map(str, location))


class Guard:
    """ASGI middleware in front of the app: the bearer token checked before anything is read (an
    unauthenticated client learns nothing about the body format), then the body read as it streams in
    with a running count, a 413 as soon as it passes ``max_body_bytes`` (whatever ``content-length``
    said, or with none: chunked uploads), and handed on whole."""

    def __init__(self, app: Any, digest: bytes | None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.digest, self.max_body_bytes = app, digest, max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        public = self.digest is None or scope["path"] == HEALTH_PATH
        if not public and not authorized(headers.get("authorization"), self.digest):
            await _reply(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
            return
        declared = headers.get("content-length")
        too_large = f"the body must be at most {self.max_body_bytes} bytes"
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await _reply(send, 413, too_large)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _reply(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()  # the disconnect, once the client goes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _reply(send: Callable, status: int, detail: str, headers: list | None = None) -> None:
    content = json.dumps({"detail": detail}).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": content})


def build_app(
    scorer: RewardScorer,
    digest: bytes | None,
    score: ScoreFn | None = None,
    limits: Limits = DEFAULT_LIMITS,
    max_body_bytes: int = MAX_BODY_BYTES,
    turn_tokens: int = TURN_TOKENS,
) -> FastAPI:
    """The API around a loaded scorer. ``digest`` is :func:`token_digest` of the token (None: no auth);
    ``score`` scores one :class:`Job`, giving its rewards or the exception scoring it raised (default:
    in a thread of this process, chunks of at most ``scorer.batch_size`` responses and ``turn_tokens``
    tokens, requests taking :class:`FairTurns` between chunks)."""
    app = FastAPI(title="gazerm reward model", docs_url=None, redoc_url=None, openapi_url=None)

    turns = FairTurns()  # one model and tokenizer: requests take turns, chunk by chunk

    async def in_process(job: Job) -> list | Exception:
        rewards: list = []
        served = 0
        for chunk in chunks(job, scorer.batch_size, turn_tokens):
            async with turns.turn(served):
                result = (await asyncio.to_thread(score_batch, scorer, [chunk]))[0]
            if isinstance(result, Exception):
                return result
            rewards.extend(result)
            served += sum(chunk.tokens) or len(chunk.texts)
        return rewards

    scoring = score or in_process
    app.add_middleware(Guard, digest=digest, max_body_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        """Each problem with the field it is in; the offending input is not echoed back."""
        problems = [{"field": _field(e), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        return JSONResponse({"detail": problems}, 422)

    @app.get(HEALTH_PATH)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/score")
    async def score_request(body: ScoreRequest) -> Any:
        job = await asyncio.to_thread(make_job, scorer, body, limits)
        rewards = await scoring(job)
        if isinstance(rewards, Exception):  # logged where it was raised; no traceback goes out
            return JSONResponse({"detail": "scoring this request failed"}, 500)
        return ScoreResponse(rewards=rewards)

    return app
