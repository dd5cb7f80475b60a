"""What readers yield and how they are told what to read: Record, ReadFilter, Region.

Coordinates are 0-based, half-open everywhere in the API. Region *strings* follow samtools
(``chr1:1,001-2,000`` is 1-based and inclusive, the bases a user of samtools expects); they are
converted once, in :meth:`Region.parse`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mambadna.errors import ConfigError


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
    """

    name: str
    sequence: bytes
    description: str = ""
    quality: bytes | None = None
    source: str = ""
    line: int | None = None

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

# samtools-style "name", "name:start", "name:start-end" with optional thousands separators,
# and "{name}:start-end" for names that contain colons (HLA alleles: HLA-A*01:01:01:01).
_REGION = re.compile(r"^(?:\{(?P<braced>[^}]+)\}|(?P<name>.+?))"
                     r"(?::(?P<start>[\d,]+)(?:-(?P<end>[\d,]*))?)?$")


@dataclass(frozen=True, slots=True)
class Region:
    """An interval of a named sequence: 0-based, half-open. end=None means to the end."""

    name: str
    start: int = 0
    end: int | None = None
    text: str | None = field(default=None, compare=False)
    """The string it was parsed from, if any: a file whose sequence is named exactly that
    (colons included) means that whole sequence (``resolve``)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a region needs a sequence name")
        if self.start < 0 or (self.end is not None and self.end < self.start):
            raise ConfigError(f"invalid region {self.name}:[{self.start}, {self.end}): "
                              "need 0 <= start <= end")

    @classmethod
    def parse(cls, text: str | Region) -> Region:
        """Parse a samtools region string (1-based, inclusive): 'chr1', 'chr1:1001-2000'."""
        if isinstance(text, Region):
            return text
        text = text.strip()
        match = _REGION.match(text)
        if match is None:
            raise ConfigError(f"cannot parse region {text!r}",
                              fix="write NAME, NAME:START or NAME:START-END (1-based, "
                                  "inclusive, as samtools does), e.g. chr1:1001-2000")
        start_text, end_text = match["start"], match["end"]
        start = int(start_text.replace(",", "")) if start_text else 1
        end = int(end_text.replace(",", "")) if end_text else None
        if start_text and end_text is None:
            end = None  # "chr1:1001" means from 1001 to the end, as in samtools
        name = match["braced"] or match["name"]
        if start < 1:
            raise ConfigError(f"region {text!r}: positions are 1-based, start must be >= 1",
                              fix=f"e.g. {name}:1-{end or 1000}")
        if end is not None and end < start:
            raise ConfigError(f"region {text!r}: end {end:,} is before start {start:,}",
                              fix=f"write NAME:START-END with START <= END (1-based, "
                                  f"inclusive, as samtools does), e.g. {name}:{end}-{start}")
        return cls(name, start - 1, end, text=text if match["braced"] is None else None)

    def resolve(self, names) -> Region:
        """The region a file with sequences ``names`` means, by samtools' rule: a string that
        is itself a sequence name ('HLA-A*01:01:01:01') is that whole sequence; otherwise the
        parsed NAME:START-END. A name with colons and an interval needs braces:
        '{HLA-A*01:01}:1-100'."""
        if self.text is not None and self.text != self.name and self.text in names:
            return Region(self.text)
        return self

    def __str__(self) -> str:
        if self.start == 0 and self.end is None:
            return self.name
        end = "" if self.end is None else str(self.end)
        name = f"{{{self.name}}}" if ":" in self.name else self.name
        return f"{name}:{self.start + 1}-{end}"


def as_regions(region: str | Region | Sequence[str | Region] | None) -> list[Region]:
    """Normalise a region argument (one or several, strings or Regions) to a list of Regions."""
    if region is None:
        return []
    if isinstance(region, (str, Region)):
        return [Region.parse(region)]
    return [Region.parse(r) for r in region]
