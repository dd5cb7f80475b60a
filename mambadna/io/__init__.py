"""Sequence readers: FASTA, FASTQ, SAM/BAM/CRAM behind one entry point, ``read_records``.

Torch-free. Formats and compression are detected from the content, never from the name::

    from mambadna.io import read_records
    for record in read_records("genome.fa.gz"):      # Record(name, sequence, ...)
        ...
    read_records("reads.bam", region="chr1:1-100000")   # samtools-style string, or Region
    fetch_interval("genome.fa", "chr1", 0, 1000)         # 0-based, half-open

``read_records("-")`` reads the standard input (``samtools view -b reads.bam | python
script.py``): once, as it streams, the format detected from its first bytes.

Record names must be unique within a file (DuplicateRecordError otherwise, unless
``allow_duplicates``). This holds for reads too: the mates of a pair in BAM/CRAM/SAM are told
apart by the /1 and /2 suffixes their flags give them; interleaved FASTQ whose mates carry the
same name needs ``allow_duplicates=True``.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from mambadna.alphabet import encode
from mambadna.errors import AlphabetError, ConfigError, DuplicateRecordError, MambaDNAError
from mambadna.io.alignments import read_alignments
from mambadna.io.annotated import ANNOTATED, annotated_sequence_line, read_annotated
from mambadna.io.fasta import DROP, REJECT, OnProblem, read_fasta, sequence_line
from mambadna.io.fastq import read_fastq, read_fastq_batches
from mambadna.io.files import FORMATS, check_path, compression, detect_format
from mambadna.io.indexed import (
    IndexedFasta,
    check_fasta_index,
    fasta_index_usable,
    fetch_interval,
    read_fasta_regions,
)
from mambadna.io.options import ReadOptions
from mambadna.io.records import ReadFilter, Record, Region
from mambadna.io.stdin import STDIN, check_stdin, is_stdin

__all__ = [
    "FORMATS",
    "STDIN",
    "IndexedFasta",
    "ReadFilter",
    "ReadOptions",
    "Record",
    "Region",
    "check_fasta_index",
    "check_stdin",
    "compression",
    "detect_format",
    "fasta_index_usable",
    "fetch_interval",
    "is_stdin",
    "locate",
    "read_records",
    "read_tokens",
    "reader_options",
]


def read_records(
    path: str | os.PathLike,
    options: ReadOptions | None = None,
    *,
    on_problem: OnProblem | None = None,
    **read_opts,
) -> Iterator[Record]:
    """Iterate over the records of a sequence file.

    options: a ReadOptions; read_opts: its fields as keywords (they override ``options``):
    fmt: "auto" (detect from content) or one of fasta, fastq, sam, bam, cram.
    region: one or several regions ("chr1", "chr1:1001-2000" 1-based like samtools, or
        Region(name, start, end) 0-based half-open). FASTA: one record per region (needs an
        uncompressed or bgzip FASTA; the .fai is built if missing). BAM/CRAM: the reads
        overlapping the regions (needs an index).
    reference: the reference FASTA of a CRAM file (required for CRAM, ignored otherwise).
    flags: which alignments to keep (BAM/CRAM/SAM only).
    allow_duplicates: accept repeated record names.
    reindex: rebuild an index that no longer fits its file instead of refusing it.
    on_problem: receives recoverable problems (the record is skipped) instead of raising.
    The path and format are checked now; records are read lazily.
    """
    try:
        options = ReadOptions.of(options, **read_opts)
    except ConfigError as err:  # e.g. region="chr1:100-50": say which file it was for
        raise err.with_location(path=path) from None
    check_stdin([path], regions=bool(options.region))
    path = check_path(path)
    fmt = options.format_of(path)
    regions = list(options.region)
    if fmt == "fasta":
        records = (read_fasta_regions(path, regions, reindex=options.reindex) if regions
                   else read_fasta(path, on_problem=on_problem))
    elif fmt == "fastq":
        if regions:
            raise ConfigError("FASTQ reads have no coordinates, so a region cannot select "
                              "them", path=path, fix="use region with FASTA or BAM/CRAM")
        records = read_fastq(path, on_problem=on_problem)
    elif fmt in ANNOTATED:
        if regions:
            raise ConfigError(f"region cannot select from {fmt} files (they are read whole)",
                              path=path, fix="convert it to FASTA (Biopython's SeqIO.convert "
                                             "or EMBOSS seqret), index that with `samtools "
                                             "faidx` and read regions from it")
        records = read_annotated(path, fmt)
    else:
        records = read_alignments(path, fmt, regions=regions, reference=options.reference,
                                  flags=options.flags, reindex=options.reindex)
    if options.allow_duplicates:
        return records
    return _unique(records, on_problem)


def _duplicate(name: str, source: str, line: int | None,
               first_line: int | None) -> DuplicateRecordError:
    return DuplicateRecordError(
        "duplicate record name" + (f" (first seen on line {first_line})" if first_line else ""),
        path=source, record=name, line=line,
        fix="rename one of them, or pass --allow-duplicates (Python: allow_duplicates=True)")


def _unique(records: Iterator[Record], on_problem: OnProblem | None) -> Iterator[Record]:
    first_line: dict[str, int | None] = {}
    for record in records:
        if record.name in first_line:
            err = _duplicate(record.name, record.source, record.line, first_line[record.name])
            if on_problem is None:
                raise err
            on_problem(err)
            continue
        first_line[record.name] = record.line
        yield record


def locate(err: MambaDNAError, record: Record) -> MambaDNAError:
    """Add file, record and line to an error about ``record`` (e.g. an AlphabetError whose
    position is within the record). Finding the line re-reads the file, so only call this on
    the way to reporting the error."""
    line = record.line
    if line is not None and err.position is not None:
        stop = b"+" if record.quality is not None else b">"
        try:
            fmt = detect_format(record.source) if record.quality is None else "fastq"
            found = (annotated_sequence_line(record.source, fmt, line, err.position)
                     if fmt in ANNOTATED else sequence_line(record.source, line, err.position,
                                                             stop))
            line = found or line
        except MambaDNAError:
            pass  # the file changed or broke since: the header line still helps
    return err.with_location(path=record.source, record=record.name, line=line)


def reader_options(
    fmt: str = "auto",
    regions: Sequence[str] = (),
    reference: str | None = None,
    include_secondary: bool = False,
    include_supplementary: bool = False,
    include_qcfail: bool = False,
    include_duplicates: bool = False,
    skip_unmapped: bool = False,
    min_mapq: int = 0,
) -> dict:
    """Deprecated (removed in 0.2): use ``ReadOptions.from_cli``. Keyword arguments for
    read_records from the command line's reader options."""
    warnings.warn("mambadna.io.reader_options is deprecated and will be removed in mambadna "
                  "0.2; use mambadna.io.ReadOptions.from_cli", DeprecationWarning, stacklevel=2)
    options = ReadOptions.from_cli(
        fmt=fmt, regions=regions, reference=reference, include_secondary=include_secondary,
        include_supplementary=include_supplementary, include_qcfail=include_qcfail,
        include_duplicates=include_duplicates, skip_unmapped=skip_unmapped, min_mapq=min_mapq)
    return {"fmt": fmt, "region": list(regions) or None, "reference": reference,
            "flags": options.flags}


@functools.cache
def _fasta_table(on_invalid: str, on_unknown: str) -> bytes:
    """alphabet.encode as a translation table, whitespace -> DROP, rejected bytes -> REJECT."""
    table = bytearray(_token_table(on_invalid, on_unknown))
    for byte in b" \t\r\v\f":
        table[byte] = DROP[0]
    return bytes(table)


@functools.cache
def _token_table(on_invalid: str, on_unknown: str) -> bytes:
    """alphabet.encode as a translation table, rejected bytes -> REJECT."""
    table = bytearray(256)
    for byte in range(256):
        try:
            table[byte] = int(encode(bytes([byte]), on_invalid=on_invalid,
                                     on_unknown=on_unknown)[0])
        except AlphabetError:
            table[byte] = REJECT[0]
    return bytes(table)


def _reject_error(path, index: int, on_invalid: str, on_unknown: str) -> MambaDNAError:
    """The AlphabetError of record ``index`` of a FASTA file, found again from its raw bases."""
    record = next(itertools.islice(read_fasta(path), index, None))
    try:
        encode(record.sequence, on_invalid=on_invalid, on_unknown=on_unknown)
    except AlphabetError as err:
        return locate(err, record)
    raise AssertionError(f"record {index} of {path} encodes on a second reading")


def read_tokens(
    path: str | os.PathLike,
    options: ReadOptions | None = None,
    **read_opts,
) -> Iterator[tuple[str, str, np.ndarray]]:
    """Yield (name, source, tokens) for each record: token ids as uint8 (alphabet.encode, with
    the options' on_invalid / on_unknown).

    FASTA is encoded while it is parsed (one pass over the bases instead of two); the
    arrays of that path are read-only. Invalid characters raise AlphabetError naming the file,
    record, position and line. options / read_opts as for read_records.
    """
    try:
        options = ReadOptions.of(options, **read_opts)
    except ConfigError as err:
        raise err.with_location(path=path) from None
    path = check_path(path)
    fmt = options.format_of(path)
    policy = {"on_invalid": options.on_invalid, "on_unknown": options.on_unknown}
    if fmt == "fastq" and not options.region and not is_stdin(path):
        yield from _fastq_tokens(path, options.allow_duplicates, policy)
        return
    # The fast path finds an invalid letter by reading the file again: not for a pipe.
    if fmt != "fasta" or options.region or is_stdin(path):
        for record in read_records(path, dataclasses.replace(options, fmt=fmt)):
            try:
                tokens = encode(record.sequence, **policy)
            except AlphabetError as err:
                raise locate(err, record) from None
            yield record.name, record.source, tokens
        return
    records = read_fasta(path, table=_fasta_table(**policy))
    if not options.allow_duplicates:
        records = _unique(records, None)
    for index, record in enumerate(records):
        if REJECT in record.sequence:
            raise _reject_error(path, index, **policy)
        yield record.name, record.source, np.frombuffer(record.sequence, dtype=np.uint8)


def _fastq_tokens(path, allow_duplicates: bool,
                  policy: dict) -> Iterator[tuple[str, str, np.ndarray]]:
    """read_tokens for FASTQ: each batch of reads is encoded with one translate and one
    frombuffer, checked for repeated names with set operations, and given out as read-only
    views into it, in a loop that runs in C (no Record object per read)."""
    source, table = os.fspath(path), _token_table(**policy)
    first_line: dict[str, int] = {}
    for batch in read_fastq_batches(path):
        names = batch.names
        lines = range(batch.first_line, batch.first_line + 4 * len(names), 4)
        ends = list(itertools.accumulate(map(len, batch.sequences)))
        starts = [0, *ends[:-1]]
        joined = b"".join(batch.sequences).translate(table)
        bad_at = joined.find(REJECT)
        stop = len(names) if bad_at < 0 else bisect.bisect_right(ends, bad_at)
        if not allow_duplicates:
            if len(set(names[:stop])) != stop or not first_line.keys().isdisjoint(names[:stop]):
                _raise_first_duplicate(names[:stop], lines, source, first_line)
            first_line.update(zip(names[:stop], lines))
        tokens = np.frombuffer(joined, dtype=np.uint8)
        yield from zip(names[:stop], itertools.repeat(source),
                       map(tokens.__getitem__, map(slice, starts[:stop], ends[:stop])))
        if stop < len(names):
            record = Record(names[stop], batch.sequences[stop], "", None, source, lines[stop])
            if not allow_duplicates and record.name in first_line:
                raise _duplicate(record.name, source, record.line, first_line[record.name])
            try:
                encode(record.sequence, **policy)
            except AlphabetError as err:
                raise locate(err, record) from None
            raise AssertionError(f"read {record.name} of {source} encodes on a second try")


def _raise_first_duplicate(names: list[str], lines: range, source: str,
                           first_line: dict[str, int]) -> None:
    seen = dict(first_line)
    for name, line in zip(names, lines):
        if name in seen:
            raise _duplicate(name, source, line, seen[name])
        seen[name] = line
