"""VCF in and out for variant scoring: records with their line numbers, BED regions, and the
input VCF written back with INFO fields added (bgzipped and tabix-indexed).

Reading goes through ``pysam.VariantFile`` (VCF, bgzipped VCF, BCF). Errors name the VCF line
(counted from the file's header; BCF has no lines, so its errors name the record's ordinal).
"""

from __future__ import annotations

import bisect
import gzip
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mambadna.errors import FormatError, InputError, OutputError
from mambadna.io.files import check_path


@dataclass(frozen=True)
class VcfRecord:
    """One VCF record. start: 0-based (POS - 1); alts: None when ALT is '.'; line: the 1-based
    line in the file (None for BCF); ordinal: 0-based index among the file's records."""

    ordinal: int
    line: int | None
    chrom: str
    start: int
    id: str
    ref: str
    alts: tuple[str, ...] | None

    @property
    def pos(self) -> int:
        """The VCF POS (1-based)."""
        return self.start + 1


def _header_lines(path: Path) -> int | None:
    """Lines before the first record (plain or gzipped VCF), or None for BCF."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as handle:
        if handle.read(3) == b"BCF":
            return None
        handle.seek(0)
        count = 0
        for line in handle:
            if not line.startswith(b"#"):
                break
            count += 1
    return count


def open_vcf(path: str | os.PathLike):
    """``pysam.VariantFile`` of ``path``, or FormatError saying what is wrong with the file."""
    import pysam

    path = check_path(path)
    try:
        return pysam.VariantFile(os.fspath(path))
    except NotImplementedError:  # pysam seeks in the file: plain gzip cannot
        raise FormatError("this VCF is compressed with plain gzip, which pysam cannot read",
                          path=path, fix=f"recompress it with bgzip: zcat {path.name} | bgzip "
                                         f"> {path.stem}.bgz.vcf.gz (or gunzip it)") from None
    except (OSError, ValueError) as err:
        raise FormatError(f"cannot read this file as VCF/BCF ({err})", path=path,
                          fix="check it with `bcftools view -h FILE`; a VCF needs its "
                              "##fileformat and #CHROM header lines") from None


class Regions:
    """BED intervals (0-based, half-open), merged per chromosome, for overlap queries."""

    def __init__(self, intervals: dict[str, list[tuple[int, int]]]) -> None:
        self._starts: dict[str, list[int]] = {}
        self._ends: dict[str, list[int]] = {}
        for chrom, spans in intervals.items():
            starts, ends = [], []
            for start, end in sorted(spans):
                if starts and start <= ends[-1]:
                    ends[-1] = max(ends[-1], end)
                else:
                    starts.append(start)
                    ends.append(end)
            self._starts[chrom], self._ends[chrom] = starts, ends

    def overlaps(self, chrom: str, start: int, end: int) -> bool:
        """Whether [start, end) meets any region of ``chrom``."""
        starts = self._starts.get(chrom)
        if not starts:
            return False
        i = bisect.bisect_left(starts, end) - 1  # the last region starting before end
        return i >= 0 and self._ends[chrom][i] > start


def read_bed(path: str | os.PathLike) -> Regions:
    """Regions of a BED file (chrom, start, end; 0-based, half-open; more columns ignored;
    'track', 'browser' and '#' lines skipped; plain or gzipped)."""
    path = check_path(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    intervals: dict[str, list[tuple[int, int]]] = {}
    with (gzip.open(path, "rt") if gzipped else open(path)) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.rstrip("\r\n").split("\t")
            try:
                chrom, start, end = fields[0], int(fields[1]), int(fields[2])
            except (IndexError, ValueError):
                raise FormatError("not a BED line (tab-separated chrom, start, end)",
                                  path=path, line=number,
                                  fix="BED columns are tab-separated, 0-based, half-open") \
                    from None
            if not 0 <= start <= end:
                raise FormatError(f"BED interval [{start}, {end}) is impossible", path=path,
                                  line=number, fix="BED needs 0 <= start <= end")
            intervals.setdefault(chrom, []).append((start, end))
    return Regions(intervals)


def read_vcf(path: str | os.PathLike, regions: Regions | None = None) -> Iterator[VcfRecord]:
    """The records of a VCF/BCF in file order; with ``regions``, only those whose REF span
    overlaps a region (records keep their ordinal and line in the file)."""
    path = check_path(path)
    header = _header_lines(path)
    with open_vcf(path) as vcf:
        records = iter(vcf)
        ordinal = 0
        while True:
            line = None if header is None else header + ordinal + 1
            try:
                rec = next(records)
            except StopIteration:
                return
            except (OSError, ValueError) as err:
                raise FormatError(f"cannot parse VCF record {ordinal + 1} ({err})", path=path,
                                  line=line, fix="check the record's columns and that it is "
                                  "declared in the header (`bcftools view FILE` names the "
                                  "problem)") from None
            ordinal += 1
            if regions is not None and not regions.overlaps(
                    rec.chrom, rec.start, rec.start + max(1, len(rec.ref or ""))):
                continue
            yield VcfRecord(ordinal - 1, line, rec.chrom, rec.start, rec.id or ".",
                            rec.ref or "", tuple(rec.alts) if rec.alts else None)


def check_sorted(records: Iterable[VcfRecord], path: str | os.PathLike) -> None:
    """Refuse records out of order (tabix can index only a VCF sorted by contig and POS)."""
    done: set[str] = set()
    previous: VcfRecord | None = None
    for rec in records:
        if previous is not None and rec.chrom != previous.chrom:
            done.add(previous.chrom)
        if rec.chrom in done or (previous is not None and rec.chrom == previous.chrom
                                 and rec.start < previous.start):
            raise InputError(f"the VCF is not sorted ({rec.chrom}:{rec.pos} comes after "
                             f"{previous.chrom}:{previous.pos}): a .vcf.gz output must be "
                             "tabix-indexed, and tabix needs sorted records", path=path,
                             line=rec.line,
                             fix="sort it first (bcftools sort IN -Oz -o sorted.vcf.gz), or "
                                 "write a table (-o scores.tsv)")
        previous = rec


INFO_FIELDS = (
    ("MAMBADNA_LLR", "Float", "Log-likelihood ratio log P(ALT window) - log P(REF window) "
     "under the model (mean of both strands unless stated in ##mambadna_score_variants)"),
    ("MAMBADNA_REF_LL", "Float", "Log-likelihood of the REF window (natural log)"),
    ("MAMBADNA_ALT_LL", "Float", "Log-likelihood of the ALT window (natural log)"),
    ("MAMBADNA_STATUS", "String", "ok, or why the ALT was not scored (symbolic, "
     "missing_contig, contig_end, too_long, ref_mismatch, no_alt)"),
)
"""INFO fields added per ALT (Number=A), in this order of values per row."""


def write_annotated_vcf(source: str | os.PathLike, target: Path, kept: dict[int, list[tuple]],
                        meta_line: str, contigs: dict[str, int | None], *,
                        compressed: bool) -> None:
    """Write ``source``'s records whose ordinal is in ``kept`` to ``target`` with the INFO
    fields added: kept[ordinal] = one (llr, ref_ll, alt_ll, status) tuple per ALT (None: no
    value). contigs: the records' contigs and their lengths (None: unknown), declared where
    the header lacks them. compressed: BGZF (then index it with ``index_vcf``), else text."""
    with open_vcf(source) as vcf:
        header = vcf.header
        # htslib writes only what the header declares: contigs, and END for symbolic ALTs
        for name, length in contigs.items():
            if name not in header.contigs:
                header.contigs.add(name, length=length)
        if "END" not in header.info:
            header.info.add("END", 1, "Integer", "End position of the variant")
        for key, kind, text in INFO_FIELDS:
            if key in header.info:
                continue  # scored before: the values are replaced, the definition stays
            header.info.add(key, "A", kind, text)
        header.add_line(meta_line)
        import pysam

        with pysam.VariantFile(os.fspath(target), "wz" if compressed else "w",
                               header=header) as out:
            for ordinal, rec in enumerate(vcf):
                values = kept.get(ordinal)
                if values is None:
                    continue
                if rec.alts:
                    for column, (key, _kind, _text) in enumerate(INFO_FIELDS):
                        rec.info[key] = tuple(v[column] for v in values)
                try:
                    out.write(rec)
                except OSError as err:
                    if OutputError.from_os_error(err, target) is not None:
                        raise
                    raise FormatError(f"htslib cannot write VCF record {ordinal + 1} "
                                      f"({rec.chrom}:{rec.pos}) back: {err.strerror or err}",
                                      path=source,
                                      fix="check the record against its header with "
                                          "`bcftools view FILE`, or write a table "
                                          "(-o scores.tsv)") from None


def index_vcf(path: Path, index: Path) -> None:
    """A tabix index (.tbi) of the bgzipped, sorted VCF ``path``, written to ``index``."""
    import pysam

    pysam.tabix_index(os.fspath(path), preset="vcf", index=os.fspath(index), force=True)
