"""The ``name:start-end`` notation: one meaning everywhere, samtools' (1-based, inclusive).

Every region string mambadna reads (``--region``, ``read_records(region=...)``) or writes (the
record names of FASTA region reads, simulated split records, held-out regions in a run's
split description, the ``region`` column of classify and embed) goes through the parser and the
printer of this module, so ``chr1:1001-2000`` always means bases 1,001 to 2,000 counted from 1,
both included: the 1,000 bases ``samtools faidx genome.fa chr1:1001-2000`` prints. In Python
and in every output column, coordinates are 0-based and half-open (BED's): that region is
``Region("chr1", 1000, 2000)``.

The notation, as samtools reads it:

- ``chr1``: the whole sequence; ``chr1:1001``: from base 1,001 to the end; ``chr1:1001-``: the
  same; ``chr1:1,001-2,000``: thousands separators are ignored;
- a sequence whose name holds colons (HLA alleles: ``HLA-A*01:01:01:01``) is meant whole when the
  string is exactly its name (``Region.resolve`` checks against the file's names); an interval of
  it needs braces: ``{HLA-A*01:01:01:01}:1-100``, which is also how such regions are printed;
- start must be at least 1 and end at least start; an end past the sequence is clipped to it.

Torch-free, and imports nothing of mambadna but its errors (``simulate`` uses it too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mambadna.errors import ConfigError

_NUMBER = r"[\d,]*\d[\d,]*"  # digits, with thousands separators anywhere (samtools ignores them)
_REGION = re.compile(rf"^(?:\{{(?P<braced>[^}}]+)\}}|(?P<name>.+?))"
                     rf"(?::(?P<start>{_NUMBER})(?P<dash>-(?P<end>{_NUMBER})?)?)?$")

_SYNTAX_FIX = ("write NAME, NAME:START or NAME:START-END (1-based, inclusive, as samtools "
               "does), e.g. chr1:1001-2000; a name with colons in braces: {HLA-A*01:01}:1-100")


def format_region(name: str, start: int = 0, end: int | None = None) -> str:
    """The samtools string of bases [start, end) (0-based, half-open) of ``name``:
    ``format_region("chr1", 1000, 2000) == "chr1:1001-2000"``; the whole sequence is its name
    alone; a name holding a colon is braced when an interval follows."""
    if start == 0 and end is None:
        return name
    shown = f"{{{name}}}" if ":" in name else name
    return f"{shown}:{start + 1}-{'' if end is None else end}"


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
            raise ConfigError("a region needs a sequence name", fix=_SYNTAX_FIX)
        if self.start < 0 or (self.end is not None and self.end < self.start):
            raise ConfigError(f"invalid region {self.name}:[{self.start}, {self.end}): "
                              "need 0 <= start <= end")

    @classmethod
    def parse(cls, text: str | Region) -> Region:
        """Parse a samtools region string (1-based, inclusive; see the module docstring)."""
        if isinstance(text, Region):
            return text
        if not isinstance(text, str):
            raise ConfigError(f"a region is a string such as chr1:1001-2000, got "
                              f"{type(text).__name__}", fix=_SYNTAX_FIX)
        text = text.strip()
        match = _REGION.match(text)
        if match is None:
            raise ConfigError(f"cannot parse region {text!r}", fix=_SYNTAX_FIX)
        name = match["braced"] or match["name"]
        if match["start"] is None:
            return cls(name, 0, None, text=None if match["braced"] else text)
        start = int(match["start"].replace(",", ""))
        end = int(match["end"].replace(",", "")) if match["end"] else None
        if start < 1:
            raise ConfigError(f"region {text!r}: positions are 1-based, start must be >= 1",
                              fix=f"e.g. {format_region(name, 0, end or 1000)}")
        if end is not None and end < start:
            raise ConfigError(f"region {text!r}: end {end:,} is before start {start:,}",
                              fix=f"write NAME:START-END with START <= END (1-based, "
                                  f"inclusive, as samtools does), e.g. "
                                  f"{format_region(name, end - 1, start)}")
        return cls(name, start - 1, end, text=None if match["braced"] else text)

    def resolve(self, names) -> Region:
        """The region a file with sequences ``names`` means, by samtools' rule: a string that
        is itself a sequence name ('HLA-A*01:01:01:01') is that whole sequence; otherwise the
        parsed NAME:START-END. A name with colons and an interval needs braces:
        '{HLA-A*01:01}:1-100'."""
        if self.text is not None and self.text != self.name and self.text in names:
            return Region(self.text)
        return self

    def clip(self, length: int) -> Region:
        """This region within a sequence of ``length`` bases (end at most ``length``; an
        open end becomes ``length``)."""
        end = length if self.end is None else min(self.end, length)
        return Region(self.name, min(self.start, end), end)

    def __str__(self) -> str:
        return format_region(self.name, self.start, self.end)


def parse_region(text: str | Region) -> Region:
    """``Region.parse``: a samtools region string (1-based, inclusive) -> Region (0-based)."""
    return Region.parse(text)


def as_regions(region: str | Region | Sequence[str | Region] | None) -> list[Region]:
    """Normalise a region argument (one or several, strings or Regions) to a list of Regions."""
    if region is None:
        return []
    if isinstance(region, (str, Region)):
        return [Region.parse(region)]
    return [Region.parse(r) for r in region]
