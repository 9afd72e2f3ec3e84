"""Where a training job's outputs live: a local path or an object-store URI (``s3://``, ``gs://``, …).

Both go through pyarrow filesystems, the layer Ray Train itself writes checkpoints with, so the
driver reads checkpoints back, exports the model and keeps its run record the same way wherever
``output_dir`` points. A local path is resolved to an absolute one (Ray needs that).

Nothing a later step trusts is ever seen half-written:

- a file (:meth:`Storage.write_text`, :func:`write_text_atomic`) is written to a temporary file beside
  it and renamed over it (on an object store one PUT, which is atomic per object);
- a directory (:meth:`Storage.replace_with`, :func:`replace_dir`) is staged beside its target and renamed
  into place; on an object store, where a directory cannot be renamed, its ``commit_file`` (the model
  directory's manifest) is removed first and copied last, so a reader that checks it (``load_reward_model``)
  refuses a directory caught mid-copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import pyarrow.fs as pafs


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``path`` so that a reader sees the old content or all of the new, never a part."""
    with open_atomic(path) as stream:
        stream.write(text)


@contextmanager
def open_atomic(path: str | Path) -> Iterator[TextIO]:
    """A text stream to a temporary file beside ``path``, flushed to disk and renamed over ``path`` once
    the block succeeds; a block that fails leaves ``path`` as it was."""
    with _staged_file(path, binary=False) as stream:
        yield stream


@contextmanager
def open_atomic_binary(path: str | Path) -> Iterator[BinaryIO]:
    """:func:`open_atomic` for bytes (a downloaded file: a block that fails, e.g. on a wrong digest,
    leaves ``path`` as it was and no partial file beside it)."""
    with _staged_file(path, binary=True) as stream:
        yield stream


@contextmanager
def _staged_file(path: str | Path, binary: bool) -> Iterator[Any]:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") if binary else os.fdopen(handle, "w", encoding="utf-8") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


@contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """A fresh directory beside ``target`` that replaces it once the block succeeds (:func:`replace_dir`);
    a block that fails leaves ``target`` as it was and no staging directory behind."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-staging-", dir=target.parent))
    try:
        yield staging
        replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(staging: str | Path, target: str | Path) -> None:
    """Put the complete directory ``staging`` (on the same filesystem) in ``target``'s place by renames:
    the old ``target`` is moved aside, ``staging`` renamed in, the old one removed. A reader sees the old
    directory, none for an instant, or the new one, never a mix."""
    staging, target = Path(staging), Path(target)
    aside = None
    if target.is_dir() and not target.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        os.replace(target, aside / target.name)
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.replace(staging, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def is_object_store(location: str | Path) -> bool:
    """A URI (``s3://``, ``gs://``, …) rather than a path; told from the text alone (no network)."""
    return "://" in str(location)


@dataclass(frozen=True)
class Storage:
    """A directory (that may not exist yet) on a filesystem; ``uri`` is how Ray and people name it."""

    filesystem: pafs.FileSystem
    path: str
    uri: str

    @classmethod
    def of(cls, location: str | Path) -> Storage:
        location = str(location)
        if is_object_store(location):
            filesystem, path = pafs.FileSystem.from_uri(location)
            return cls(filesystem, path.rstrip("/"), location.rstrip("/"))
        path = str(Path(location).resolve())
        return cls(pafs.LocalFileSystem(), path, path)

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def child(self, name: str) -> Storage:
        return Storage(self.filesystem, f"{self.path}/{name}", f"{self.uri}/{name}")

    def exists(self) -> bool:
        return self.filesystem.get_file_info(self.path).type != pafs.FileType.NotFound

    def size(self) -> int | None:
        """The file's size in bytes; None if there is no file here."""
        info = self.filesystem.get_file_info(self.path)
        return info.size if info.type == pafs.FileType.File else None

    def read_text(self) -> str:
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read().decode("utf-8")

    def write_text(self, text: str) -> None:
        """Atomically: a local file is renamed into place, an object is one PUT."""
        if self.is_local:
            write_text_atomic(self.path, text)
            return
        parent = self.path.rsplit("/", 1)[0]
        self.filesystem.create_dir(parent, recursive=True)
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(text.encode("utf-8"))

    def subdirectories(self, prefix: str = "") -> list[Storage]:
        """Direct subdirectories whose name starts with ``prefix``, by name; none if this does not exist."""
        if not self.exists():
            return []
        found = self.filesystem.get_file_info(pafs.FileSelector(self.path))
        names = sorted(info.base_name for info in found if info.type == pafs.FileType.Directory)
        return [self.child(name) for name in names if name.startswith(prefix)]

    def delete(self) -> None:
        if self.exists():
            self.filesystem.delete_dir(self.path)

    def replace_with(self, local_dir: str | Path, commit_file: str | None = None) -> None:
        """Make this directory a copy of ``local_dir`` (what was here before is removed), never visible
        half-copied: locally a copy staged beside it and renamed in; on an object store ``commit_file``
        (a file of ``local_dir``, e.g. the model manifest) is deleted first and written last."""
        source = Path(local_dir).resolve()
        if self.is_local:
            with staged_dir(self.path) as staging:
                shutil.copytree(source, staging, dirs_exist_ok=True)
            return
        if commit_file is not None:
            self.child(commit_file).delete_file()
        self.delete()
        self.filesystem.create_dir(self.path, recursive=True)
        self._upload_files(source, skip=commit_file)
        if commit_file is not None:
            self._upload(source / commit_file, commit_file)

    def add_files(self, local_dir: str | Path) -> None:
        """Copy ``local_dir``'s files into this directory, beside what is there: how each rank adds its
        part of a shared checkpoint."""
        source = Path(local_dir).resolve()
        if self.is_local:
            shutil.copytree(source, self.path, dirs_exist_ok=True)
            return
        self._upload_files(source)

    def delete_file(self) -> None:
        if self.filesystem.get_file_info(self.path).type == pafs.FileType.File:
            self.filesystem.delete_file(self.path)

    def _upload_files(self, source: Path, skip: str | None = None) -> None:
        """Every file under ``source`` (but ``skip``, a relative name) to the same place under this one."""
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            name = file.relative_to(source).as_posix()
            if name != skip:
                self._upload(file, name)

    def _upload(self, file: Path, name: str) -> None:
        destination = self.child(name).path
        self.filesystem.create_dir(destination.rsplit("/", 1)[0], recursive=True)
        with file.open("rb") as source, self.filesystem.open_output_stream(destination) as stream:
            shutil.copyfileobj(source, stream, 8 * 2**20)
