"""Where a training job's outputs live: a local path or an object-store URI (``s3://``, ``gs://``, …).

Both go through pyarrow filesystems, the layer Ray Train itself writes checkpoints with, so the
driver reads checkpoints back, exports the model and keeps its run record the same way wherever
``output_dir`` points. A local path is resolved to an absolute one (Ray needs that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs


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

    def replace_with(self, local_dir: str | Path) -> None:
        """Make this directory a copy of ``local_dir`` (what was here before is removed)."""
        self.delete()
        self.filesystem.create_dir(self.path, recursive=True)
        pafs.copy_files(
            str(Path(local_dir).resolve()),
            self.path,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.filesystem,
        )
