"""``gazerm gaze download``: the paper's predictor files fetched from a local file server."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gazerm.cli import app
from gazerm.data.config import GazeSpec
from gazerm.features import fmv_files

CONTENT = {"T5-tokenizer-BiLSTM-TRT-12-concat-3": b"fmv1 weights" * 1000, "model.pth": b"fmv2 weights" * 300}
DIGEST = {name: hashlib.sha256(data).hexdigest() for name, data in CONTENT.items()}


class _Handler(SimpleHTTPRequestHandler):
    content_type: str | None = None  # a test's override of what the server says it sends

    def guess_type(self, path):
        return self.content_type or super().guess_type(path)

    def log_message(self, *args):
        pass


class _BreakingOff(BaseHTTPRequestHandler):
    """Declares a body of 1,000,000 bytes (``chunked``: a chunk of 2,000), sends 1,000 and ends the
    connection: closes it, or with ``reset`` resets it."""

    ending = "close"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.ending == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"7d0\r\n")
        else:
            self.send_header("Content-Length", "1000000")
            self.end_headers()
        self.wfile.write(b"x" * 1000)
        if self.ending == "reset":  # linger 0: closing sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        self.close_connection = True

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(handler) -> Iterator[str]:
    """Run ``handler`` on a local port while the caller's block runs; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll: shutdown() waits for the serving loop's next look at its flag (0.5 s by default).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def mirror(tmp_path):
    """The URL of a server holding the two published files under their names; its handler class."""
    served = tmp_path / "served"
    served.mkdir()
    for name, data in CONTENT.items():
        (served / name).write_bytes(data)
    handler = type("Handler", (_Handler,), {})
    with _serve(functools.partial(handler, directory=str(served))) as url:
        yield url, handler, served


def _download(*args: str):
    return CliRunner().invoke(app, ["gaze", "download", *args])


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize("predictor", ["fmv1", "fmv2"])
def test_download_writes_the_file_and_a_gaze_block_that_reads_it(mirror, tmp_path, predictor):
    url, _, _ = mirror
    name = fmv_files.PUBLISHED[predictor].name
    directory = tmp_path / "models" / predictor
    result = _download(predictor, str(directory), "--sha256", DIGEST[name].upper(), "--mirror", url)
    assert result.exit_code == 0, result.output
    assert (directory / name).read_bytes() == CONTENT[name]
    assert _files(directory) == sorted([name, f"gaze-{predictor}.yaml"])  # no temporary file left
    block = yaml.safe_load((directory / f"gaze-{predictor}.yaml").read_text())
    spec = GazeSpec.model_validate(block["gaze"])
    assert (spec.predictor, spec.path) == (predictor, (directory / name).resolve().as_posix())
    assert spec.base == f"models/{'t5-small' if predictor == 'fmv1' else 'roberta-base'}"
    assert DIGEST[name] in result.output and "gaze:" in result.output
    assert ("features_used: [0, 0, 0, 1, 0]" in result.output) == (predictor == "fmv1")


def test_the_gaze_block_of_a_relative_directory_names_the_file_from_anywhere(mirror, tmp_path, monkeypatch):
    url, _, _ = mirror
    monkeypatch.chdir(tmp_path)
    assert _download("fmv2", "models/fmv2", "--sha256", DIGEST["model.pth"], "--mirror", url).exit_code == 0
    monkeypatch.chdir(tmp_path / "models")  # e.g. prepare run from beside the YAML
    path = Path(yaml.safe_load(Path("fmv2/gaze-fmv2.yaml").read_text())["gaze"]["path"])
    assert path.is_absolute() and path.read_bytes() == CONTENT["model.pth"]


def test_a_pinned_digest_is_checked_and_a_verified_file_is_reused(mirror, tmp_path, monkeypatch):
    url, _, served = mirror
    monkeypatch.setattr(fmv_files, "PINNED_SHA256", {"fmv2": DIGEST["model.pth"]})
    assert _download("fmv2", str(tmp_path), "--mirror", url, "--base", "rb").exit_code == 0
    (served / "model.pth").unlink()  # a second run must not fetch it again
    again = _download("fmv2", str(tmp_path), "--mirror", url, "--base", "rb")
    assert again.exit_code == 0 and "already there" in again.output
    assert yaml.safe_load((tmp_path / "gaze-fmv2.yaml").read_text())["gaze"]["base"] == "rb"


def test_a_given_digest_cannot_replace_a_pinned_one(mirror, tmp_path, monkeypatch):
    url, _, _ = mirror
    monkeypatch.setattr(fmv_files, "PINNED_SHA256", {"fmv2": "f" * 64})  # say the mirror's file is not it
    other = _download("fmv2", str(tmp_path / "d"), "--sha256", DIGEST["model.pth"], "--mirror", url)
    assert other.exit_code == 2 and f"is not the digest pinned for fmv2 ({'f' * 64}" in other.output
    assert _files(tmp_path / "d") == []
    monkeypatch.setattr(fmv_files, "PINNED_SHA256", {"fmv2": DIGEST["model.pth"]})
    agreeing = _download(
        "fmv2", str(tmp_path / "d"), "--sha256", DIGEST["model.pth"].upper(), "--mirror", url
    )
    assert agreeing.exit_code == 0 and (tmp_path / "d" / "model.pth").read_bytes() == CONTENT["model.pth"]


def test_a_wrong_digest_is_refused_and_leaves_nothing(mirror, tmp_path, monkeypatch):
    url, _, _ = mirror
    directory = tmp_path / "fmv1"
    result = _download("fmv1", str(directory), "--sha256", "0" * 64, "--mirror", url)
    assert result.exit_code == 2
    assert f"sha256 {DIGEST['T5-tokenizer-BiLSTM-TRT-12-concat-3']}, expected {'0' * 64}" in result.output
    assert _files(directory) == []
    monkeypatch.setattr(fmv_files, "PINNED_SHA256", {"fmv1": "f" * 64})  # a pinned one likewise
    assert _download("fmv1", str(directory), "--mirror", url).exit_code == 2
    assert _files(directory) == []


def test_an_unpinned_file_is_refused_with_its_digest_unless_trusted(mirror, tmp_path):
    url, _, _ = mirror
    refused = _download("fmv2", str(tmp_path / "d"), "--mirror", url)
    assert refused.exit_code == 2
    assert f"its sha256 is {DIGEST['model.pth']}" in refused.output and "--trust-new" in refused.output
    assert _files(tmp_path / "d") == [".unverified-model.pth"]  # not under the name a gaze config reads
    trusted = _download("fmv2", str(tmp_path / "d"), "--mirror", url, "--trust-new")
    assert trusted.exit_code == 0 and "record it" in trusted.output
    assert (tmp_path / "d" / "model.pth").read_bytes() == CONTENT["model.pth"]
    assert _files(tmp_path / "d") == ["gaze-fmv2.yaml", "model.pth"]


def test_the_checked_digest_takes_the_refused_download_without_fetching_it_again(mirror, tmp_path):
    url, _, served = mirror
    directory = tmp_path / "d"
    assert _download("fmv2", str(directory), "--mirror", url).exit_code == 2
    (directory / ".unverified-model.pth").write_bytes(b"changed since")  # not the digest given: fetched
    fetched = _download("fmv2", str(directory), "--mirror", url, "--sha256", DIGEST["model.pth"])
    assert fetched.exit_code == 0 and (directory / "model.pth").read_bytes() == CONTENT["model.pth"]

    (directory / "model.pth").unlink()
    assert _download("fmv2", str(directory), "--mirror", url).exit_code == 2
    (served / "model.pth").unlink()  # so what is taken now cannot be fetched
    taken = _download("fmv2", str(directory), "--mirror", url, "--sha256", DIGEST["model.pth"])
    assert taken.exit_code == 0 and "already there" in taken.output
    assert (directory / "model.pth").read_bytes() == CONTENT["model.pth"]
    assert _files(directory) == ["gaze-fmv2.yaml", "model.pth"]


def test_a_missing_file_or_a_web_page_is_a_clear_error(mirror, tmp_path):
    url, handler, served = mirror
    (served / "model.pth").unlink()
    missing = _download("fmv2", str(tmp_path / "d"), "--mirror", url, "--trust-new")
    assert missing.exit_code == 2 and f"{url}/model.pth: HTTP 404" in missing.output
    handler.content_type = "text/html"  # what Drive sends instead of a file it will not serve
    page = _download("fmv1", str(tmp_path / "d"), "--mirror", url, "--trust-new")
    assert page.exit_code == 2 and "web page" in page.output
    assert _files(tmp_path / "d") == []


def test_a_download_cut_short_is_refused_and_leaves_nothing(tmp_path):
    with _serve(_BreakingOff) as url:
        cut = _download("fmv2", str(tmp_path / "d"), "--mirror", url, "--trust-new")
    assert cut.exit_code == 2, cut.output
    assert "declared 1000000 bytes and sent 1000" in cut.output and "nothing written" in cut.output
    assert _files(tmp_path / "d") == []


@pytest.mark.parametrize(
    ("ending", "error"), [("reset", "ConnectionResetError"), ("chunked", "IncompleteRead")]
)
def test_a_connection_that_breaks_off_is_a_clear_error(tmp_path, ending, error):
    handler = type("Handler", (_BreakingOff,), {"ending": ending})
    with _serve(handler) as url:
        broken = _download("fmv2", str(tmp_path / "d"), "--mirror", url, "--trust-new")
    assert broken.exit_code == 2, broken.output
    assert f"broke off ({error}" in broken.output and "nothing written" in broken.output
    assert _files(tmp_path / "d") == []


def test_a_malformed_digest_and_an_unreachable_server_are_clear_errors(tmp_path):
    assert "64 hex digits" in _download("fmv1", str(tmp_path), "--sha256", "abc").output
    closed = _download("fmv1", str(tmp_path), "--mirror", "http://127.0.0.1:9", "--trust-new")
    assert closed.exit_code == 2 and "cannot fetch it" in closed.output


def test_the_published_addresses_are_eyetrackpys():
    assert fmv_files.PUBLISHED["fmv1"].published_url == (
        "https://drive.google.com/uc?id=1_skRPxLzlY3d68bKk1cf656pYFc--URt"
    )
    assert fmv_files.PUBLISHED["fmv2"].url(None) == (
        "https://drive.usercontent.google.com/download?id=1CTiali54Q7zsT25ciY0y0sIIf2jZVbZG"
        "&export=download&confirm=t"
    )
