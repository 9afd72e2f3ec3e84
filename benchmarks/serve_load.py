"""Load test of ``gazerm serve``: a fixed number of /score requests against the real Ray Serve deployment,
or (``--scenario abuse``) normal clients beside one abusive client against the API in process.

    python benchmarks/serve_load.py [--model-dir DIR] [--requests 200] [--concurrency 8] [--time-limit 300]
    python benchmarks/serve_load.py --scenario abuse [--requests 120] [--concurrency 4]

Starts the service on a free loopback port (a local Ray; with a random token) on the saved model in
``--model-dir``, or on a tiny random-weight model it saves first, sends one warm-up request, then
``--requests`` requests, ``--concurrency`` at a time, each with ``--responses`` responses (every
fourth one with recorded fixations on its first response). Prints requests/s, responses/s, p50/p99
latency and the error count; a request that fails, gets a non-200 or a wrong number of rewards, or is
not done within ``--time-limit`` seconds is an error, and any error makes the exit code 1.

``--scenario abuse`` needs no Ray: the app of :func:`gazerm.serve.api.build_app` (scoring in process,
requests taking turns ``batch_size`` responses at a time) under uvicorn on a free loopback port. The
normal clients send ``--requests`` requests, ``--concurrency`` at a time, twice: alone, then while one
abusive client sends the largest requests the budgets let through (64 responses, a context of long
turns, near ``max_request_chars`` in all) back to back. It prints the normal clients' p50/p99 latency
in both runs, their errors, and the abuser's requests; the exit code is 1 if a normal request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx

WORDS = "the reader moves quickly over short common words and slows down on long unusual terminology".split()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in (0, 1]."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def tiny_model(directory: Path) -> Path:
    """A saved random-weight tiny-llama reward model with the reading-model gaze predictor."""
    from gazerm.model.config import ModelConfig
    from gazerm.model.inputs import InputSpec
    from gazerm.model.io import save_reward_model
    from gazerm.model.reward_model import build_reward_model, build_tokenizer

    config = ModelConfig(backbone="tiny-llama")
    tokenizer = build_tokenizer(config)
    model = build_reward_model(config, tokenizer).eval()
    return save_reward_model(
        model, tokenizer, config, InputSpec({"predictor": "reading_model"}, 128), directory
    )


def body(index: int, responses: int) -> dict:
    """Request ``index``: varied prompt and response lengths; every fourth has fixations on response 0."""
    texts = [" ".join(WORDS[(index + r) % 7 :][: 4 + (index * 3 + r) % 12]) for r in range(responses)]
    items: list = list(texts)
    if index % 4 == 0:
        fixations = [
            {"word_idx": w, "onset": 250.0 * w, "duration": 180.0 + 20 * (w % 3)}
            for w in range(len(texts[0].split()))
        ]
        items[0] = {"text": texts[0], "fixations": fixations}
    return {
        "prompt": f"Question {index}: how do people read {WORDS[index % len(WORDS)]}?",
        "responses": items,
    }


async def fire(
    url: str, token: str, count: int, concurrency: int, responses: int
) -> tuple[list[float], int, float]:
    """Latencies (s) of the successful requests, the number of failed ones and the seconds they took
    (after the warm-up request)."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:

        async def one(index: int) -> float | None:
            async with gate:
                started = time.perf_counter()
                try:
                    reply = await client.post("/score", json=body(index, responses))
                except httpx.HTTPError as error:
                    print(f"request {index}: {type(error).__name__}: {error}", file=sys.stderr)
                    return None
                if reply.status_code != 200 or len(reply.json()["rewards"]) != responses:
                    print(f"request {index}: {reply.status_code} {reply.text[:200]}", file=sys.stderr)
                    return None
                return time.perf_counter() - started

        if await one(-1) is None:
            return [], count, 0.0
        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - started
    latencies = [latency for latency in results if latency is not None]
    return latencies, count - len(latencies), elapsed


def abusive_body(index: int, max_chars: int) -> dict:
    """The most one request may carry: 64 responses and a long context, ``max_chars`` characters in all
    (just under), every field within its own limit."""
    from gazerm.serve.api import MAX_RESPONSES, MAX_TEXT_CHARS, MAX_TURNS

    def text(chars: int, seed: int) -> str:
        words = " ".join(WORDS[(seed + i) % len(WORDS)] for i in range(chars // 5))
        return words[:chars].strip()

    prompt = text(2_000, index)
    response_chars = 1_000
    context_chars = max_chars - len(prompt) - MAX_RESPONSES * response_chars - 1_000
    turns = min(MAX_TURNS, max(1, context_chars // 4_000))
    per_turn = min(MAX_TEXT_CHARS, context_chars // turns)
    context = [
        {"role": "user" if t % 2 == 0 else "assistant", "content": text(per_turn, t)} for t in range(turns)
    ]
    responses = [text(response_chars, index + r) for r in range(MAX_RESPONSES)]
    return {"prompt": prompt, "context": context, "responses": responses}


async def abuse(url: str, token: str, requests: int, concurrency: int, responses: int) -> dict:
    """The normal clients' latencies and errors alone, then beside the abuser; the abuser's count."""
    from gazerm.serve.api import MAX_REQUEST_CHARS

    alone, alone_errors, _ = await fire(url, token, requests, concurrency, responses)
    stop = asyncio.Event()
    sent, refused, abuser_latencies = 0, 0, []

    async def abuser() -> None:
        nonlocal sent, refused
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
            while not stop.is_set():
                started = time.perf_counter()
                reply = await client.post("/score", json=abusive_body(sent, MAX_REQUEST_CHARS))
                abuser_latencies.append(time.perf_counter() - started)
                sent += 1
                refused += reply.status_code != 200

    task = asyncio.create_task(abuser())
    await asyncio.sleep(0.5)  # the abuser's first request in flight
    beside, beside_errors, _ = await fire(url, token, requests, concurrency, responses)
    stop.set()
    await task
    return {
        "alone": (alone, alone_errors),
        "beside": (beside, beside_errors),
        "abuser": (sent, refused, abuser_latencies),
    }


def run_abuse(args: argparse.Namespace) -> int:
    import threading

    import uvicorn

    from gazerm.runtime import free_port
    from gazerm.score import RewardScorer
    from gazerm.serve.api import MAX_REQUEST_CHARS, TURN_TOKENS, build_app, token_digest

    model_dir = args.model_dir or tiny_model(Path(tempfile.mkdtemp(prefix="gazerm-serve-load-")) / "model")
    token = secrets.token_urlsafe(32)
    scorer = RewardScorer(model_dir, batch_size=args.max_batch_size)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(scorer, token_digest(token)), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        work = abuse(f"http://127.0.0.1:{port}", token, args.requests, args.concurrency, args.responses)
        result = asyncio.run(asyncio.wait_for(work, args.time_limit))
    except asyncio.TimeoutError:
        print(f"not done within --time-limit {args.time_limit:.0f}s", file=sys.stderr)
        return 1
    finally:
        server.should_exit = True
        thread.join(10)

    print(
        f"model {model_dir}, in process (no Ray), chunks of <= {args.max_batch_size} responses and "
        f"{args.turn_tokens or TURN_TOKENS} tokens; "
        f"normal clients: {args.requests} requests x {args.responses} responses, "
        f"concurrency {args.concurrency}"
    )
    for name in ("alone", "beside"):
        latencies, errors = result[name]
        label = "without the abuser" if name == "alone" else "with the abuser   "
        if latencies:
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            print(f"normal {label}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, errors {errors}")
        else:
            print(f"normal {label}: no request succeeded, errors {errors}")
    sent, refused, latencies = result["abuser"]
    if latencies:
        size = len(json.dumps(abusive_body(0, MAX_REQUEST_CHARS))) // 1000
        print(
            f"abuser: {sent} max-size requests (64 responses, {size} kB each), {refused} refused, "
            f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms"
        )
    alone, beside = result["alone"][0], result["beside"][0]
    if alone and beside:
        ratio = percentile(beside, 0.99) / percentile(alone, 0.99)
        print(f"normal p99 with / without the abuser: {ratio:.2f}x")
    return 1 if result["alone"][1] or result["beside"][1] else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="saved reward model (default: a tiny random one)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--responses", type=int, default=2, help="responses per request")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds for all requests")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument(
        "--scenario", choices=("ray", "abuse"), default="ray", help="abuse: in process, no Ray (see above)"
    )
    parser.add_argument("--turn-tokens", type=int, help="abuse: tokens per turn (default: the API's)")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if args.scenario == "abuse":
        return run_abuse(args)

    from ray import serve

    from gazerm.runtime import free_port
    from gazerm.serve.deployment import start

    model_dir = args.model_dir or tiny_model(Path(tempfile.mkdtemp(prefix="gazerm-serve-load-")) / "model")
    port = free_port()
    token = secrets.token_urlsafe(32)
    url = start(
        model_dir,
        token,
        replicas=args.replicas,
        port=port,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
    )
    work = fire(url, token, args.requests, args.concurrency, args.responses)
    try:
        latencies, errors, elapsed = asyncio.run(asyncio.wait_for(work, args.time_limit))
    except asyncio.TimeoutError:
        print(f"not done within --time-limit {args.time_limit:.0f}s", file=sys.stderr)
        latencies, errors, elapsed = [], args.requests, args.time_limit
    finally:
        serve.shutdown()

    done = len(latencies)
    print(
        f"model {model_dir}, {args.replicas} replica(s), max batch {args.max_batch_size}, "
        f"batch wait {args.batch_wait_ms:g} ms"
    )
    print(
        f"{args.requests} requests x {args.responses} responses, concurrency {args.concurrency}: "
        f"{elapsed:.1f}s, {done / max(elapsed, 1e-9):.1f} requests/s, "
        f"{done * args.responses / max(elapsed, 1e-9):.1f} responses/s"
    )
    if latencies:
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(f"errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
