"""Fetching the paper's predictor files (``fmv1``, ``fmv2``) from where eyetrackpy publishes them.

eyetrackpy (``data_generator/fixations_predictor/models/model_manager.py``) downloads each file from
a Google Drive id with ``gdown`` on first use. ``gazerm gaze download`` fetches the same files once,
ahead of any job, so that prepare never downloads (``gazerm.features.fmv_common``): streamed into a
temporary file beside the target, hashed on the way, and renamed into place only when the SHA-256 is
the expected one, so a failed or tampered download leaves nothing behind. A complete download with no
digest to check it against waits under a hidden name (``_unverified``), which prepare never reads, so
that once its printed digest is checked, passing it takes that copy instead of fetching hundreds of MB
again.

The expected digest is the pinned one below or ``sha256=`` given by the caller (which must agree with a
pin: it adds a check, it cannot replace one). ``PINNED_SHA256`` is empty until someone records the
digests of a real download; until then an unpinned file is refused (its digest is printed so it can be
checked and passed on) unless the caller trusts it explicitly: trust on first use.

``mirror`` replaces Drive by a directory or URL holding the files under their published names (an
offline cluster's file server, ``file:///path`` to an eyetrackpy install's copy, a test server).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import yaml
from tqdm import tqdm

from gazerm.cache import file_sha256
from gazerm.errors import ConfigError, GazermError
from gazerm.features.base import FEATURE_NAMES
from gazerm.features.featurize import UNPREDICTED
from gazerm.features.fmv_published import PUBLISHED, PublishedFile
from gazerm.storage import open_atomic_binary, write_text_atomic

CHUNK = 1 << 20

# Digests of the published files, from a real download (see the module doc); a predictor missing here
# has none recorded yet.
PINNED_SHA256: dict[str, str] = {}


class DownloadError(GazermError, OSError):
    """A file that could not be fetched, or whose content is not the expected one; nothing was written
    under its name."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    pinned: bool  # whether the digest was checked against an expected one
    reused: bool  # the file was there already with the expected digest
    gaze_config: Path


def download(
    predictor: str,
    directory: str | Path,
    base: str | Path | None = None,
    sha256: str | None = None,
    trust_new: bool = False,
    mirror: str | None = None,
    progress: bool = True,
) -> Downloaded:
    """Fetch ``predictor``'s file into ``directory`` and write the ``gaze:`` block that uses it
    (``directory/gaze-<predictor>.yaml``, ``base`` its ``gaze.base``: default ``models/<base model>``). Its
    ``gaze.path`` is absolute: prepare reads a relative one from where it runs, not from beside the YAML."""
    if predictor not in PUBLISHED:
        raise ConfigError(
            f"no published file for gaze predictor {predictor!r}; choose one of {list(PUBLISHED)}"
        )
    published = PUBLISHED[predictor]
    expected = _expected(predictor, sha256)
    target = Path(directory) / published.name
    reused = _reuse(target, expected)
    digest = expected if reused else _fetch(published.url(mirror), target, expected, trust_new, progress)
    config = Path(directory) / f"gaze-{predictor}.yaml"
    write_text_atomic(config, gaze_block(published, target.resolve(), base))
    return Downloaded(target, digest, expected is not None, reused, config)


def _expected(predictor: str, sha256: str | None) -> str | None:
    pinned = PINNED_SHA256.get(predictor)
    if sha256 is None:
        return pinned
    digest = sha256.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"--sha256: expected 64 hex digits, got {sha256!r}")
    if pinned is not None and digest != pinned:
        raise ConfigError(
            f"--sha256 {digest} is not the digest pinned for {predictor} ({pinned}, PINNED_SHA256 in "
            "gazerm/features/fmv_files.py): a file with another digest is not the published one"
        )
    return digest


def _fetch(url: str, target: Path, expected: str | None, trust_new: bool, progress: bool) -> str:
    """Stream ``url`` to ``target`` (renamed into place only if its digest is accepted); its digest."""
    kept = _unverified(target)
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}; nothing written") from None
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(
            f"{url}: cannot fetch it ({getattr(error, 'reason', error)}); nothing written"
        ) from None
    with response:
        if response.headers.get_content_type() == "text/html":
            raise DownloadError(
                f"{url} answered with a web page, not the file (Google Drive's warning or quota page): "
                f"fetch it in a browser and rerun with --mirror file:///<its directory>; nothing written"
            )
        size = response.headers.get("Content-Length", "")
        declared = int(size) if size.isdigit() else None
        digest = hashlib.sha256()
        bar = tqdm(
            total=declared,
            unit="B",
            unit_scale=True,
            desc=target.name,
            disable=not progress,
        )
        with bar, open_atomic_binary(kept) as stream:  # raising in here discards the file
            for chunk in _body(url, response, declared):
                digest.update(chunk)
                stream.write(chunk)
                bar.update(len(chunk))
    _accept(url, digest.hexdigest(), expected, trust_new, kept)
    os.replace(kept, target)
    return digest.hexdigest()


def _unverified(target: Path) -> Path:
    """Where a complete download of ``target`` waits while no digest vouches for it."""
    return target.with_name(f".unverified-{target.name}")


def _reuse(target: Path, expected: str | None) -> bool:
    """Whether ``target`` already holds the file with the ``expected`` digest, or a download kept aside for
    want of a digest does (it is then renamed into place)."""
    if expected is None:
        return False
    if target.is_file() and file_sha256(target) == expected:
        return True
    kept = _unverified(target)
    if kept.is_file() and file_sha256(kept) == expected:
        os.replace(kept, target)
        return True
    return False


def _body(url: str, response: BinaryIO, declared: int | None) -> Iterator[bytes]:
    """The response's body in chunks, all ``declared`` bytes of it: a connection that closes early reads as
    the end of the body (``http.client`` returns b"" rather than raising), so the count is checked here; one
    that breaks off (reset, timed out, a chunk cut short) is a DownloadError too."""
    received = 0
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(
                f"{url}: the download broke off ({type(error).__name__}: {error}); nothing written"
            ) from None
        if not chunk:
            break
        received += len(chunk)
        yield chunk
    if declared is not None and received != declared:
        raise DownloadError(
            f"{url}: the server declared {declared} bytes and sent {received} before the connection "
            "closed; nothing written"
        )


def _accept(url: str, digest: str, expected: str | None, trust_new: bool, kept: Path) -> None:
    """Raise unless the download ``kept`` aside has the ``expected`` digest (else it is deleted) or, with no
    digest expected, is trusted (else it stays aside)."""
    if expected is not None and digest != expected:
        kept.unlink()
        raise DownloadError(f"{url}: sha256 {digest}, expected {expected}; nothing written")
    if expected is None and not trust_new:
        raise DownloadError(
            f"{url}: no sha256 is pinned for this file and none was given; its sha256 is {digest}. "
            f"Check it, then rerun with --sha256 <digest> (it takes the copy kept aside in {kept}, "
            "without fetching it again) or --trust-new; nothing written under the file's name"
        )


def gaze_block(published: PublishedFile, checkpoint: Path, base: str | Path | None) -> str:
    """The ``gaze:`` section of a prepare config that reads ``checkpoint``."""
    section = {
        "predictor": published.predictor,
        "path": checkpoint.as_posix(),
        "base": Path(base or f"models/{published.base}").as_posix(),
    }
    notes = [
        f"# {published.predictor}: {published.published_url} (eyetrackpy's model_manager.py)",
        f"# gaze.base: a local {published.base} directory, saved once from the hub (README: gaze features)",
    ]
    unpredicted = UNPREDICTED.get(published.predictor, ())
    if unpredicted:
        used = [int(name not in unpredicted) for name in FEATURE_NAMES]
        notes.append(
            f"# it leaves {', '.join(unpredicted)} at 0: train on it with model.features_used: {used}"
        )
    return "\n".join(notes) + "\n" + yaml.safe_dump({"gaze": section}, sort_keys=False)
