"""Random access into FASTA files through ``pysam.FastaFile`` (.fai, plus .gzi for bgzip).

The index is built on first use when the file's folder is writable. A plain-gzip FASTA cannot
be indexed at all: gzip has no restart points, bgzip has (and is still valid gzip).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from mambadna.errors import FormatError, IndexRequiredError, InputError
from mambadna.io.files import check_path, compression
from mambadna.io.options import ReadOptions
from mambadna.io.records import Record, Region


def fasta_index_usable(path: str | os.PathLike, options: ReadOptions | None = None) -> bool:
    """True if ``path`` is a FASTA that can be read window by window through an index that
    already exists (.fai, plus .gzi for bgzip), and ``options`` ask for whole records."""
    options = options or ReadOptions()
    if options.region or options.fmt not in ("auto", "fasta"):
        return False
    kind = compression(path)
    if kind == "gzip" or not Path(f"{path}.fai").is_file():
        return False
    if kind == "bgzip" and not Path(f"{path}.gzi").is_file():
        return False
    return options.format_of(path) == "fasta"


def _index_fix(path: Path) -> str:
    return f"samtools faidx {path.name} (in a folder you can write, or next to a copy)"


class IndexedFasta:
    """An indexed FASTA file: names, lengths and intervals without reading the whole file.

    Use as a context manager or call close(); fetch() is 0-based, half-open.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_path(path)
        kind = compression(self.path)
        if kind == "gzip":
            raise IndexRequiredError(
                "random access needs a bgzip-compressed FASTA; this file is plain gzip",
                path=self.path,
                fix=f"zcat {self.path.name} | bgzip > {self.path.stem}.bgz.fa.gz && "
                    f"samtools faidx {self.path.stem}.bgz.fa.gz (or gunzip it)")
        needed = [Path(f"{self.path}.fai")]
        if kind == "bgzip":
            needed.append(Path(f"{self.path}.gzi"))
        if not all(p.exists() for p in needed) and not os.access(self.path.parent, os.W_OK):
            raise IndexRequiredError(
                f"no index ({', '.join(p.name for p in needed)}) and its folder is not "
                "writable, so it cannot be built", path=self.path, fix=_index_fix(self.path))
        import pysam  # lazy: see mambadna.io.alignments

        try:
            self._fasta = pysam.FastaFile(os.fspath(self.path))
        except (OSError, ValueError) as err:
            raise FormatError(
                f"cannot index this FASTA ({err})", path=self.path,
                fix="an indexed FASTA needs lines of equal length within each record: "
                    "rewrap it (e.g. `seqkit seq -w 60`), then `samtools faidx`") from None
        self.lengths = dict(zip(self._fasta.references, self._fasta.lengths))

    @property
    def names(self) -> list[str]:
        return list(self._fasta.references)

    def fetch(self, name: str, start: int = 0, end: int | None = None) -> bytes:
        """Bases [start, end) of record ``name`` (end None: to the end), case kept."""
        length = self.lengths.get(name)
        if length is None:
            shown = ", ".join(list(self.lengths)[:5])
            raise InputError(f"no record {name!r} (has {shown}"
                             f"{'...' if len(self.lengths) > 5 else ''})", path=self.path,
                             fix="use a record name of this file")
        end = length if end is None else end
        if not 0 <= start <= end <= length:
            raise InputError(f"interval [{start}, {end}) is outside the record (length "
                             f"{length}; 0-based, half-open)", path=self.path, record=name,
                             fix=f"use 0 <= start <= end <= {length}")
        return self._fasta.fetch(name, start, end).encode("ascii")

    def close(self) -> None:
        self._fasta.close()

    def __enter__(self) -> IndexedFasta:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fetch_interval(path: str | os.PathLike, name: str, start: int, end: int) -> bytes:
    """Bases [start, end) (0-based, half-open) of record ``name`` in an indexed FASTA."""
    with IndexedFasta(path) as fasta:
        return fasta.fetch(name, start, end)


def read_fasta_regions(path: str | os.PathLike, regions: list[Region]) -> Iterator[Record]:
    """One Record per region; named like samtools faidx ('chr1' or 'chr1:1001-2000')."""
    source = os.fspath(path)
    with IndexedFasta(path) as fasta:
        for region in regions:
            region = region.resolve(fasta.lengths)
            end = region.end
            if end is not None and region.name in fasta.lengths:
                end = min(end, fasta.lengths[region.name])  # samtools clips at the end too
            sequence = fasta.fetch(region.name, region.start, end)
            if not sequence:
                raise InputError(f"region {region} is empty", path=source,
                                 fix="choose a region inside the record")
            yield Record(str(region), sequence, "", None, source, None)
