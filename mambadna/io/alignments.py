"""BAM, CRAM and SAM through pysam: all reads, in their original orientation.

- ``check_sq=False`` so unaligned BAM (no @SQ lines) opens; without a region every record is
  read (``until_eof``), mapped or not.
- Reads come back as sequenced: ``get_forward_sequence()`` undoes the reverse complement of
  reverse-strand alignments.
- The two reads of a pair share a name in SAM; they become ``name/1`` and ``name/2`` (the
  convention of FASTQ files) so that each read has a unique name in a token store.
- Region queries need an index (.bai/.csi/.crai); CRAM needs its reference FASTA. Regions may
  overlap: each read is read once, under its own name, at the first region (in the order
  given) that it overlaps, so overlapping regions never repeat a read (``samtools view -M``
  drops the repeats too; it keeps file order, we keep the order of the regions). Without the
  reference htslib would try to download it, which a tool must never do silently. An index
  older than its file is refused, or rebuilt with ``reindex=True`` (``--reindex``), which also
  builds a missing one (``samtools index`` through pysam, renamed into place when whole).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mambadna.atomic import atomic_file
from mambadna.errors import (
    ConfigError,
    FormatError,
    IndexRequiredError,
    InputError,
    MambaDNAError,
)
from mambadna.io.files import check_path
from mambadna.io.indexed import REINDEX, check_index_age
from mambadna.io.records import DEFAULT_FILTER, ReadFilter, Record, Region
from mambadna.io.stdin import is_stdin, stdin_pipe

_MODES = {"bam": "rb", "cram": "rc", "sam": "r"}


def _pysam():
    import pysam  # lazy: the GPU machine and torch-only installs may lack it

    return pysam


def open_alignments(path: Path, fmt: str, reference: str | os.PathLike | None):
    """Open with pysam; CRAM without a reference and unreadable files raise domain errors."""
    if fmt == "cram" and reference is None:
        raise ConfigError("reading CRAM needs the reference FASTA it was compressed against",
                          path=path, fix="pass --reference REF.fa (Python: reference=...)")
    ref = os.fspath(check_path(reference)) if reference is not None else None
    pysam = _pysam()
    # The standard input comes through a pipe that replays the head format detection read;
    # htslib would look for an index of the pipe (and say it found none): quiet while opening.
    stream = is_stdin(path)
    verbosity = pysam.set_verbosity(0) if stream else None
    try:
        source = stdin_pipe() if stream else os.fspath(path)
        return pysam.AlignmentFile(source, _MODES[fmt], check_sq=False,
                                   reference_filename=ref)
    except (ValueError, OSError) as err:
        raise FormatError(f"cannot read as {fmt.upper()}: {err}", path=path,
                          fix="check the file with `samtools quickcheck -v FILE`") from None
    finally:
        if verbosity is not None:
            pysam.set_verbosity(verbosity)


def _keep(read, flags: ReadFilter) -> bool:
    if flags.skip_secondary and read.is_secondary:
        return False
    if flags.skip_supplementary and read.is_supplementary:
        return False
    if flags.skip_qcfail and read.is_qcfail:
        return False
    if flags.skip_duplicates and read.is_duplicate:
        return False
    if read.is_unmapped:
        return not flags.skip_unmapped
    return read.mapping_quality >= flags.min_mapq


def _name(read) -> str:
    name = read.query_name or ""
    if read.is_paired and (read.is_read1 or read.is_read2):
        mate = "/1" if read.is_read1 else "/2"
        if not name.endswith(mate):
            name += mate
    return name


def _record(read, path: Path, source: str, region: str | None) -> Record:
    sequence = read.get_forward_sequence()
    name = _name(read)
    if not sequence:
        kind = "secondary " if read.is_secondary else ""
        raise FormatError(f"{kind}alignment has no stored sequence (SEQ is '*')", path=path,
                          record=name,
                          fix="skip secondary alignments (the default); their bases are on "
                              "the primary alignment")
    # query_qualities rather than get_forward_qualities: the latter fails on reverse-strand
    # reads without qualities (pysam 0.24).
    qualities = read.query_qualities
    quality = None
    if qualities is not None and len(qualities) == len(sequence):
        phred = np.asarray(qualities, dtype=np.uint8)
        quality = ((phred[::-1] if read.is_reverse else phred) + 33).tobytes()
    return Record(name, sequence.encode("ascii"), "", quality, source, None, region)


def _fetch(handle, path: Path, fmt: str, regions: list[Region]) -> Iterator[tuple]:
    """(read, the region that found it or None) for each read, each read once."""
    if not regions:
        for read in handle.fetch(until_eof=True):
            yield read, None
        return
    if fmt == "sam" or not handle.has_index():
        kind = "CRAM (.crai)" if fmt == "cram" else "BAM (.bai or .csi)"
        raise IndexRequiredError(
            f"region queries need a coordinate-sorted, indexed {kind}", path=path,
            fix=f"samtools sort -o sorted.{'cram' if fmt == 'cram' else 'bam'} {path.name} "
                "&& samtools index sorted.*; or read the whole file without a region")
    done: dict[str, list[Region]] = {}  # the regions already read, by sequence
    for region in regions:
        region = region.resolve(handle.references)
        if region.name not in handle.references:
            shown = ", ".join(handle.references[:5])
            raise InputError(f"region {region}: no sequence {region.name!r} in the header "
                             f"(has {shown}{'...' if len(handle.references) > 5 else ''})",
                             path=path, fix="use a name from the @SQ lines")
        earlier = done.setdefault(region.name, [])
        for read in handle.fetch(region.name, region.start, region.end):
            if not any(_overlaps(read, other) for other in earlier):
                yield read, str(region)
        earlier.append(region)


def _overlaps(read, region: Region) -> bool:
    """Whether ``fetch`` of ``region`` returns ``read`` (htslib's rule: the read's reference
    span, one base for a read without one, overlaps the interval)."""
    start = read.reference_start
    end = max(read.reference_end or start, start + 1)  # htslib's bam_endpos
    return start < (region.end if region.end is not None else 1 << 62) and end > region.start


def alignment_indexes(path: Path) -> list[Path]:
    """The index files beside a BAM/CRAM (``r.bam.bai`` or ``r.bai``, .csi, .crai)."""
    return [index for suffix in (".bai", ".csi", ".crai")
            for index in dict.fromkeys((Path(f"{path}{suffix}"), path.with_suffix(suffix)))
            if index.is_file()]


def rebuild_alignment_index(path: str | os.PathLike, fmt: str,
                            index: Path | None = None) -> Path:
    """Index a coordinate-sorted BAM/CRAM with pysam (``samtools index``) into ``index``
    (default ``FILE.bai`` / ``FILE.crai``; a .csi name gets a CSI index), atomically."""
    path = Path(path)
    index = Path(index) if index is not None else Path(
        f"{path}{'.crai' if fmt == 'cram' else '.bai'}")
    pysam = _pysam()
    with atomic_file(index) as tmp:
        try:
            pysam.index(*(["-c"] if index.suffix == ".csi" else []), os.fspath(path),
                        os.fspath(tmp))
        except pysam.SamtoolsError as err:
            text = str(err).strip().splitlines()
            raise FormatError(
                f"cannot index this {fmt.upper()} ({text[-1][:200] if text else err})",
                path=path, fix=f"sort it by coordinate first: samtools sort -o sorted.{fmt} "
                               f"{path.name}, then index that") from None
    return index


def check_alignment_index(path: Path, fmt: str, *, reindex: bool = False) -> None:
    """Refuse an index older than its BAM/CRAM (written before the file changed: region
    queries through it return other reads); with ``reindex`` rebuild it instead, and build
    a missing one."""
    if fmt == "sam":
        return
    found = alignment_indexes(path)
    if not found and reindex:
        rebuild_alignment_index(path, fmt)
    for index in found:
        try:
            check_index_age(path, index, fix=f"samtools index {path.name}" + REINDEX)
        except IndexRequiredError:
            if not reindex:
                raise
            rebuild_alignment_index(path, fmt, index)


def read_alignments(path: str | os.PathLike, fmt: str, *, regions: list[Region] | None = None,
                    reference: str | os.PathLike | None = None,
                    flags: ReadFilter = DEFAULT_FILTER,
                    reindex: bool = False) -> Iterator[Record]:
    """Yield the reads of a BAM/CRAM/SAM file that pass ``flags`` (in file order).

    regions: only reads overlapping these intervals (0-based, half-open); needs an index.
    reference: the FASTA a CRAM was written against (required for CRAM).
    reindex: rebuild a stale index (and build a missing one) instead of refusing it.
    """
    path = Path(path)
    source = os.fspath(path)
    if regions:
        check_alignment_index(path, fmt, reindex=reindex)  # before pysam opens the index
    handle = open_alignments(path, fmt, reference)
    try:
        for read, region in _fetch(handle, path, fmt, regions or []):
            if _keep(read, flags):
                yield _record(read, path, source, region)
    except (OSError, ValueError) as err:
        if isinstance(err, MambaDNAError):
            raise
        raise FormatError(f"{fmt.upper()} data is corrupt or truncated ({err})", path=path,
                          fix="check it with `samtools quickcheck -v FILE`; copy or "
                              "download it again") from None
    finally:
        try:
            handle.close()
        except OSError:
            if not is_stdin(path):  # a pipe that broke off mid-record fails to close too
                raise
