"""Random access into FASTA files through ``pysam.FastaFile`` (.fai, plus .gzi for bgzip).

The index is built on first use when the file's folder is writable. A plain-gzip FASTA cannot
be indexed at all: gzip has no restart points, bgzip has (and is still valid gzip). An index
that no longer describes its file (the file changed after indexing) is refused, or rebuilt
when the caller allows it (``reindex=True``, ``--reindex``): with pysam (samtools faidx /
samtools index) into a temporary name, renamed into place only once it is whole.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

from mambadna.atomic import atomic_file
from mambadna.errors import FormatError, IndexRequiredError, InputError
from mambadna.io.files import check_path, compression
from mambadna.io.options import ReadOptions
from mambadna.io.records import Record, Region
from mambadna.io.stdin import is_stdin


def fasta_index_usable(path: str | os.PathLike, options: ReadOptions | None = None) -> bool:
    """True if ``path`` is a FASTA that can be read window by window through an index that
    already exists (.fai, plus .gzi for bgzip), and ``options`` ask for whole records."""
    options = options or ReadOptions()
    if options.region or options.fmt not in ("auto", "fasta") or is_stdin(path):
        return False
    kind = compression(path)
    if kind == "gzip" or not Path(f"{path}.fai").is_file():
        return False
    if kind == "bgzip" and not Path(f"{path}.gzi").is_file():
        return False
    return options.format_of(path) == "fasta"


def _index_fix(path: Path) -> str:
    return f"samtools faidx {path.name} (in a folder you can write, or next to a copy)"


STALE_INDEX = ("{index} is older than the file: the file changed after it was indexed, and "
               "reads through the old index return the wrong bases")
CHECKED_RECORDS = 64
"""Records of a .fai whose header line is checked on disk (the first and last ones)."""


REINDEX = " (or pass --reindex, Python: reindex=True, to rebuild it now)"


def check_index_age(path: Path, index: Path, fix: str) -> None:
    """Refuse an index older than its file (modified after indexing): samtools and pysam
    would read the new file at the old offsets and silently return other bases."""
    if index.is_file() and index.stat().st_mtime_ns < path.stat().st_mtime_ns:
        raise IndexRequiredError(STALE_INDEX.format(index=index.name), path=path, fix=fix)


def _fai_rows(fai: Path, fix: str) -> list[tuple[str, int, int, int, int]]:
    rows = []
    with open(fai, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.rstrip("\r\n").split("\t")
            try:
                name, length, offset, bases, width = fields[0], *map(int, fields[1:5])
            except (ValueError, IndexError):
                raise IndexRequiredError("not a FASTA index (each line: name, length, offset, "
                                         "line bases, line bytes)", path=fai, line=number,
                                         fix=fix) from None
            if length < 0 or offset < 0 or bases < 1 or width < bases:
                raise IndexRequiredError("impossible FASTA index entry", path=fai, line=number,
                                         record=name, fix=fix)
            rows.append((name, length, offset, bases, width))
    return rows


def rebuild_fasta_index(path: str | os.PathLike) -> list[Path]:
    """Index ``path`` again with pysam (``samtools faidx``): its .fai, and .gzi for bgzip.
    Each index is written under a temporary name and renamed into place when whole, so a
    failure or a kill leaves the old index (still refused) rather than half a new one.
    Returns the index files written."""
    path = Path(path)
    kind = compression(path)
    if kind == "gzip":
        raise IndexRequiredError("a plain-gzip FASTA cannot be indexed", path=path,
                                 fix=f"recompress it with bgzip: zcat {path.name} | bgzip > "
                                     f"{path.stem}.bgz.fa.gz")
    import pysam  # lazy: see mambadna.io.alignments

    fai, gzi = Path(f"{path}.fai"), Path(f"{path}.gzi")
    with atomic_file(fai) as tmp_fai, \
            (atomic_file(gzi) if kind == "bgzip" else contextlib.nullcontext()) as tmp_gzi:
        args = [os.fspath(path), "--fai-idx", os.fspath(tmp_fai)]
        if tmp_gzi is not None:
            args += ["--gzi-idx", os.fspath(tmp_gzi)]
        try:
            pysam.faidx(*args)
        except pysam.SamtoolsError as err:
            raise FormatError(
                f"cannot index this FASTA ({_last_line(err)})", path=path,
                fix="an indexed FASTA needs lines of equal length within each record: "
                    "rewrap it (e.g. `seqkit seq -w 60`)") from None
    return [fai, gzi] if kind == "bgzip" else [fai]


def _last_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1][:200] if text else type(err).__name__


def check_fasta_index(path: str | os.PathLike, *, reindex: bool = False) -> None:
    """Refuse a .fai (or .gzi) that does not describe ``path`` as it is now: older than the
    file, or (uncompressed FASTA) record layouts that run past the file's end, overlap, or do
    not start right after a header line. Called before every indexed read; a stale index
    would silently change what is read. reindex: rebuild such an index instead (pysam,
    atomically) and check the new one."""
    try:
        _check_fasta_index(Path(path), offer_reindex=True)
    except IndexRequiredError:
        if not reindex:
            raise
        rebuild_fasta_index(path)
        _check_fasta_index(Path(path), offer_reindex=False)


def _check_fasta_index(path: Path, offer_reindex: bool) -> None:
    fix = f"index it again: samtools faidx {path.name}" + (REINDEX if offer_reindex else "")
    fai = Path(f"{path}.fai")
    check_index_age(path, fai, fix)
    kind = compression(path)
    if kind == "bgzip":
        check_index_age(path, Path(f"{path}.gzi"), fix)
    if kind != "none" or not fai.is_file():
        return  # compressed: the offsets are into the decompressed text
    rows = _fai_rows(fai, fix)
    size = path.stat().st_size
    ends = []
    for name, length, offset, bases, width in rows:
        full, rest = divmod(length, bases)
        end = offset + full * width + (rest + width - bases if rest else 0)
        ends.append(end)
        if end > size + (width - bases):  # the last line may lack its line ending
            raise IndexRequiredError(
                f"the index puts record {name!r} at bytes {offset}-{end}, past the end of the "
                f"file ({size} bytes): the file changed after it was indexed", path=path,
                fix=fix)
    order = sorted(range(len(rows)), key=lambda i: rows[i][2])
    for a, b in itertools.pairwise(order):
        if rows[b][2] < ends[a]:
            raise IndexRequiredError(
                f"the index's records {rows[a][0]!r} and {rows[b][0]!r} overlap in the file: "
                "it does not describe this file", path=path, fix=fix)
    picked = order[:CHECKED_RECORDS // 2] + order[-(CHECKED_RECORDS // 2):]
    with open(path, "rb") as handle:
        for i in dict.fromkeys(picked):
            name, length, offset, _bases, _width = rows[i]
            if length == 0:
                continue  # an empty record's offset is where the next header starts
            handle.seek(max(0, offset - 1))
            before = handle.read(2) if offset else b"\n" + handle.read(1)
            if before[:1] not in (b"\n", b"\r") or before[1:2] in (b">", b";"):
                raise IndexRequiredError(
                    f"record {name!r} does not start at byte {offset} where the index puts it "
                    "(no header line ends there): the file changed after it was indexed",
                    path=path, fix=fix)


class IndexedFasta:
    """An indexed FASTA file: names, lengths and intervals without reading the whole file.

    Use as a context manager or call close(); fetch() is 0-based, half-open. reindex:
    rebuild a stale index instead of refusing it (see check_fasta_index).
    """

    def __init__(self, path: str | os.PathLike, *, reindex: bool = False) -> None:
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
        check_fasta_index(self.path, reindex=reindex)
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


def read_fasta_regions(path: str | os.PathLike, regions: list[Region], *,
                       reindex: bool = False) -> Iterator[Record]:
    """One Record per distinct region; named like samtools faidx ('chr1' or 'chr1:1001-2000').
    Overlapping regions are distinct records (their names differ); a region asked twice is
    read once."""
    source = os.fspath(path)
    seen: set[str] = set()
    with IndexedFasta(path, reindex=reindex) as fasta:
        for region in regions:
            region = region.resolve(fasta.lengths)
            if str(region) in seen:  # the same region asked twice is one record
                continue
            seen.add(str(region))
            end = region.end
            if end is not None and region.name in fasta.lengths:
                end = min(end, fasta.lengths[region.name])  # samtools clips at the end too
            sequence = fasta.fetch(region.name, region.start, end)
            if not sequence:
                raise InputError(f"region {region} is empty", path=source,
                                 fix="choose a region inside the record")
            yield Record(str(region), sequence, "", None, source, None, str(region))
