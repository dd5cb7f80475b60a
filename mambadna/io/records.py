"""What readers yield and how they are told what to read: Record, ReadFilter, Region.

Coordinates are 0-based, half-open everywhere in the API. Region *strings* follow samtools
(``chr1:1,001-2,000`` is 1-based and inclusive); ``Region`` and its one parser and printer live
in ``mambadna.regions`` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mambadna.errors import ConfigError
from mambadna.regions import Region, as_regions, format_region

__all__ = ["DEFAULT_FILTER", "ReadFilter", "Record", "Region", "as_regions", "format_region"]


@dataclass(frozen=True, slots=True)
class Record:
    """One sequence as read from a file.

    name: the record name (FASTA/FASTQ: the first word of the header; BAM: the read name, with
        ``/1`` or ``/2`` appended for the first and second read of a pair).
    sequence: the bases as in the file (case kept, line breaks removed), in the read's original
        orientation for BAM/CRAM/SAM.
    description: the rest of the header line after the name.
    quality: FASTQ/BAM base qualities as Phred+33 ASCII bytes (len == len(sequence)), or None.
    source: the path the record was read from.
    line: 1-based line of the header in text formats (FASTA, FASTQ), else None.
    region: BAM/CRAM read with regions: the region (samtools' notation) whose query found the
        read (the first that overlaps it, in the order asked), else None.
    """

    name: str
    sequence: bytes
    description: str = ""
    quality: bytes | None = None
    source: str = ""
    line: int | None = None
    region: str | None = None

    def __len__(self) -> int:
        return len(self.sequence)


@dataclass(frozen=True, slots=True)
class ReadFilter:
    """Which alignment records (BAM/CRAM/SAM) to keep. Ignored for FASTA and FASTQ.

    The defaults keep each sequenced read once: secondary and supplementary alignments repeat
    (parts of) a primary read, and QC-failed and duplicate-marked reads are noise.
    min_mapq applies to mapped reads only, so unaligned BAM keeps working with it.
    """

    skip_secondary: bool = True
    skip_supplementary: bool = True
    skip_qcfail: bool = True
    skip_duplicates: bool = True
    skip_unmapped: bool = False
    min_mapq: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_mapq <= 255:
            raise ConfigError(f"min_mapq must be in [0, 255], got {self.min_mapq}")


DEFAULT_FILTER = ReadFilter()
