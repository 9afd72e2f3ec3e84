"""The contract every source format implements, and the registry ``prepare`` looks formats up in."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gazerm.data.errors import DataError
from gazerm.data.readers import Layout, RecordOrError
from gazerm.data.schema import PreferenceExample


@dataclass(frozen=True)
class Tie:
    """A record whose responses are all equally good (equal scores, or one reply given for all), or
    that has too few responses for the pairing a format was asked for (HelpSteer2's reference pairs).

    It states no preference, so it gives no example, yet it is no error either: sources such as
    DSP's WebGPT file tie a quarter of their items on purpose. A parser yields one in place of the
    example so that no record vanishes unseen; ``prepare`` counts them per source (``ties`` in the
    manifest's source stats and in its log line).
    """

    file: str
    row: int


@dataclass(frozen=True)
class SourceReport:
    """What a parser tells ``prepare`` about a whole source beyond its examples: counts of what it left
    out and why, of the behaviour it matched (``counts``, kept in the manifest's source stats), and the
    names of the implicit features its examples carry (``implicit_feature_names``). Yielded once, last."""

    file: str
    counts: dict[str, Any]
    implicit_feature_names: tuple[str, ...] | None = None


Loaded = PreferenceExample | DataError | Tie | SourceReport
Parser = Callable[..., Iterator[Loaded]]


@dataclass(frozen=True)
class SourceFormat:
    """A source format: how its raw records become :class:`PreferenceExample` rows.

    ``parse(records, file, **options)`` receives ``(row, record_or_error)`` pairs from a reader
    and yields one example per usable record, a :class:`Tie` for one that states no preference,
    or a :class:`DataError` for each bad one (a reader's error is passed on unchanged). It never
    skips a record silently.
    ``hub_name`` is the dataset's real Hugging Face name, used when no local path is given.
    ``layout`` says how the readers read its files (headerless CSV, keyed JSON). ``hub_files`` maps
    splits to files of ``hub_name`` that are downloaded and read like local ones, for a hub repository
    of raw release files that ``datasets`` cannot load as they are.
    ``read`` gives the records of a local ``path`` where a format reads its own layout: a release
    published as a directory of tables (IFLLM) reads its main table there, and its parser gets the
    directory as ``file`` to read the others. Without it, files are read by their extension.
    """

    name: str
    hub_name: str | None
    parse: Parser
    description: str
    layout: Layout = field(default_factory=Layout)
    hub_files: Mapping[str, str] | None = None
    read: Callable[[Path], Iterator[RecordOrError]] | None = None
    whole_source: bool = False  # its parser ends with a SourceReport of the whole source: no ``limit``


FORMATS: dict[str, SourceFormat] = {}


def register(fmt: SourceFormat) -> SourceFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def guarded(records: Iterable[RecordOrError], file: str, build: Callable[[Any, int], Iterator[Loaded]]):
    """Run ``build(record, row)`` for each record, turning a raised :class:`DataError` into a yielded one."""
    for row, record in records:
        if isinstance(record, DataError):
            yield record
            continue
        try:
            yield from build(record, row)
        except DataError as error:
            yield error
