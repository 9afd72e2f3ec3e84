"""``gazerm serve``: refuses to start without a token, passes its options on; Ray is never started here."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import gazerm.serve.deployment as deployment
from gazerm.cli import app
from gazerm.serve.api import TOKEN_ENV, Limits
from tests.serve.conftest import TOKEN


@pytest.fixture
def started(monkeypatch) -> list[dict]:
    """What ``start`` was called with; it and the wait for Ctrl-C do nothing."""
    calls: list[dict] = []

    def start(model_dir, token, **options):
        calls.append({"model_dir": model_dir, "token": token, **options})
        return f"http://{options['host']}:{options['port']}"

    monkeypatch.setattr(deployment, "start", start)
    monkeypatch.setattr(deployment, "serve_until_interrupted", lambda: None)
    return calls


def test_serve_without_a_token_is_refused(model_dir, started, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    result = CliRunner().invoke(app, ["serve", str(model_dir)])
    assert result.exit_code == 2
    assert TOKEN_ENV in result.output and "--no-auth" in result.output
    assert started == []


def test_serve_passes_the_token_and_options_and_prints_the_url(model_dir, started, monkeypatch, tmp_path):
    monkeypatch.setenv(TOKEN_ENV, "not-this-one-0123456789-0123456789")
    (tmp_path / "token").write_text(TOKEN + "\n")
    args = [
        "serve",
        str(model_dir),
        "--token-file",
        str(tmp_path / "token"),
        "--replicas",
        "2",
        "--gpus",
        "0.5",
    ]
    result = CliRunner().invoke(
        app, [*args, "--port", "8123", "--max-batch-size", "8", "--batch-wait-ms", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8123" in result.output
    assert started == [
        {
            "model_dir": model_dir,
            "token": TOKEN,
            "replicas": 2,
            "gpus": 0.5,
            "host": "127.0.0.1",
            "port": 8123,
            "max_batch_size": 8,
            "batch_wait_ms": 5.0,
            "max_queued_requests": 64,
            "request_timeout_s": 60.0,
            "limits": Limits(),
        }
    ]


def test_serve_with_no_auth_starts_without_a_token(model_dir, started, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    result = CliRunner().invoke(app, ["serve", str(model_dir), "--no-auth"])
    assert result.exit_code == 0, result.output
    assert started[0]["token"] is None


def test_serve_of_a_missing_model_fails_before_ray_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(deployment, "init_ray", lambda: pytest.fail("Ray must not start"))
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "nothing"), "--no-auth"])
    assert result.exit_code == 2
    assert "not a saved reward model" in result.output
