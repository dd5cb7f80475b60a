"""Records for the pipelines: each with its name, length and the tokens of any interval.

Inputs are read with ``mambadna.io.read_records`` (FASTA, FASTA.gz, FASTQ, SAM/BAM/CRAM, one
record per read), in input order. Memory per record:

- an indexed FASTA (a ``.fai`` beside it, plus ``.gzi`` for bgzip; ``samtools faidx`` makes
  them) is read window by window through the index, so memory does not depend on the record
  length: this is the flat-memory path for whole chromosomes;
- every other input holds one record at a time in memory (its tokens, one byte per base; FASTA
  is encoded while it is parsed); a note suggests indexing records longer than
  ``LARGE_RECORD``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mambadna.alphabet import encode
from mambadna.errors import AlphabetError, InputError
from mambadna.io import (
    IndexedFasta,
    ReadOptions,
    check_fasta_index,
    check_stdin,
    fasta_index_usable,
    locate,
    read_records,
    read_tokens,
)
from mambadna.io.files import check_path

_log = logging.getLogger(__name__)

LARGE_RECORD = 1 << 26
"""Records longer than this (64 Mb) read without an index get a note about indexing."""


class SourceRecord:
    """One input record: ``index`` (ordinal over all inputs), ``name``, ``source``, ``length``.

    ``tokens(start, end)`` -> uint8 token ids of bases [start, end) of the record (0-based,
    half-open, counted from the record's first base).
    ``offset``: where the record's first base lies in its sequence (a FASTA region
    ``chr1:1001-2000`` is the record ``chr1`` with offset 1000), so that outputs report
    ``offset + start`` in genome coordinates; 0 for whole records and reads.
    ``region``: the region asked for (samtools' notation) that the record comes from, or None.
    """

    __slots__ = ("_fetch", "index", "length", "name", "offset", "region", "source")

    def __init__(self, index: int, name: str, source: str, length: int,
                 fetch: Callable[[int, int], np.ndarray], *, offset: int = 0,
                 region: str | None = None) -> None:
        self.index = index
        self.name = name
        self.source = source
        self.length = length
        self._fetch = fetch
        self.offset = offset
        self.region = region

    def tokens(self, start: int, end: int) -> np.ndarray:
        return self._fetch(start, end)

    def __repr__(self) -> str:
        return f"SourceRecord({self.index}, {self.name!r}, length={self.length})"


class RecordStream:
    """Iterate the records of several inputs in order (optionally only some ordinals).

    options / read_opts: how to read and encode (mambadna.io.ReadOptions and its fields).
    select: keep the records whose ordinal passes (``None``: all); the others are skipped
        without encoding, but counted in ``n_records``, so ranks agree on ordinals.
    After iteration, ``n_records`` is the count of records of all inputs.
    """

    def __init__(self, inputs: Sequence[str | os.PathLike], options: ReadOptions | None = None,
                 *, select: Callable[[int], bool] | None = None, **read_opts) -> None:
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        if not inputs:
            raise InputError("no inputs given", fix="pass one or more FASTA/FASTQ/BAM files")
        self.options = ReadOptions.of(options, **read_opts)
        check_stdin(inputs, regions=bool(self.options.region))
        self.inputs = [check_path(p) for p in inputs]  # fail before any work is done
        self.select = select
        self.n_records = 0
        self._handles: list[IndexedFasta] = []
        self._indexed = [fasta_index_usable(p, self.options) for p in self.inputs]
        for path, indexed in zip(self.inputs, self._indexed):
            if indexed:
                # a stale index: refused (or rebuilt, --reindex) before any work
                check_fasta_index(path, reindex=self.options.reindex)

    def total_bases(self) -> int | None:
        """Bases of all inputs when every input is an indexed FASTA (for progress), else None."""
        if not all(self._indexed):
            return None
        total = 0
        for path in self.inputs:
            with IndexedFasta(path) as fasta:
                total += sum(fasta.lengths.values())
        return total

    def __iter__(self) -> Iterator[SourceRecord]:
        self.n_records = 0
        for path, indexed in zip(self.inputs, self._indexed):
            if indexed:
                yield from self._indexed_records(path)
            elif self.options.region and self.options.format_of(path) == "fasta":
                yield from self._fasta_regions(path)
            elif self.options.region:
                yield from self._region_reads(path)
            else:
                yield from self._read(path)

    def _take(self) -> tuple[int, bool]:
        index = self.n_records
        self.n_records += 1
        return index, self.select is None or self.select(index)

    def _read(self, path: Path) -> Iterator[SourceRecord]:
        for name, source, tokens in read_tokens(path, self.options):
            index, keep = self._take()
            if not keep:
                continue
            if len(tokens) > LARGE_RECORD:
                _log.warning("note: %s: record %r (%d bases) is held in memory; index the "
                             "FASTA (samtools faidx, bgzip first if compressed) to read it "
                             "window by window", path, name, len(tokens))
            yield SourceRecord(index, name, source, len(tokens),
                               lambda start, end, t=tokens: t[start:end])

    def _indexed_records(self, path: Path) -> Iterator[SourceRecord]:
        # The handle stays open until close(): streamed records are read after the iteration
        # has moved on to the next record or input.
        fasta = IndexedFasta(path)
        self._handles.append(fasta)
        for name in fasta.names:
            index, keep = self._take()
            if keep:
                yield SourceRecord(index, name, os.fspath(path), fasta.lengths[name],
                                   self._window_reader(fasta, name, path))

    def _fasta_regions(self, path: Path) -> Iterator[SourceRecord]:
        # Each region is read window by window through the index (built if missing), as a
        # record of its sequence that starts at the region's start.
        fasta = IndexedFasta(path)
        self._handles.append(fasta)
        seen: set[str] = set()
        for asked in self.options.region:
            region = asked.resolve(fasta.lengths)
            if region.name not in fasta.lengths:
                raise InputError(f"region {region}: no sequence {region.name!r} in the file",
                                 path=path, fix="use a name of the FASTA's records "
                                                "(cut -f1 FILE.fai lists them)")
            if str(region) in seen:  # the same region asked twice is read once
                continue
            seen.add(str(region))
            clipped = region.clip(fasta.lengths[region.name])
            if clipped.end == clipped.start:
                raise InputError(f"region {region} is empty", path=path,
                                 fix="choose a region inside the record")
            index, keep = self._take()
            if keep:
                yield SourceRecord(index, region.name, os.fspath(path),
                                   clipped.end - clipped.start,
                                   self._window_reader(fasta, region.name, path, clipped.start),
                                   offset=clipped.start, region=str(region))

    def _region_reads(self, path: Path) -> Iterator[SourceRecord]:
        # Reads of BAM/CRAM overlapping the regions, each once, with the region that found it.
        for record in read_records(path, self.options):
            index, keep = self._take()
            if not keep:
                continue
            try:
                tokens = encode(record.sequence, on_invalid=self.options.on_invalid,
                                on_unknown=self.options.on_unknown)
            except AlphabetError as err:
                raise locate(err, record) from None
            yield SourceRecord(index, record.name, record.source, len(tokens),
                               lambda start, end, t=tokens: t[start:end], region=record.region)

    def close(self) -> None:
        """Close the indexed FASTA files opened by the iteration."""
        for fasta in self._handles:
            fasta.close()
        self._handles.clear()

    def _window_reader(self, fasta: IndexedFasta, name: str, path: Path, offset: int = 0):
        def fetch(start: int, end: int) -> np.ndarray:
            start, end = start + offset, end + offset
            try:
                return encode(fasta.fetch(name, start, end), offset=start,
                              on_invalid=self.options.on_invalid,
                              on_unknown=self.options.on_unknown)
            except AlphabetError as err:
                raise err.with_location(path=path, record=name) from None

        return fetch
