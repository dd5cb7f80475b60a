"""How sequence files are read: one ``ReadOptions`` from the command line to the readers.

The CLI builds it once from its reader options (``ReadOptions.from_cli``) and every layer
passes it on unchanged: tokenize, validate, classify, embed, evaluate, the k-mer baseline. The
public readers keep their keyword arguments (``read_records(path, region="chr1")``), which
build a ReadOptions with ``ReadOptions.of``. Format detection happens in one place,
``format_of``. Torch-free.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

from mambadna.errors import ConfigError
from mambadna.io.files import FORMATS, detect_format
from mambadna.io.records import DEFAULT_FILTER, ReadFilter, Region, as_regions

POLICIES = ("N", "error")


@dataclass(frozen=True)
class ReadOptions:
    """What to read from sequence files, and how their letters become tokens."""

    fmt: str = "auto"
    """"auto" (detected from the content) or one of fasta, fastq, sam, bam, cram."""
    region: tuple[Region, ...] = ()
    """Regions to read (an indexed FASTA, BAM or CRAM); strings are parsed as samtools' 1-based
    ``chr1:1001-2000``. Empty: whole files."""
    reference: str | None = None
    """The reference FASTA of CRAM inputs (required for CRAM)."""
    flags: ReadFilter = DEFAULT_FILTER
    """Which alignments to keep (BAM/CRAM/SAM)."""
    allow_duplicates: bool = False
    """Accept repeated record names within a file."""
    on_invalid: str = "N"
    """IUPAC ambiguity codes: read as N, or "error"."""
    on_unknown: str = "error"
    """Any other non-base character: "error", or read as N."""
    reindex: bool = False
    """Rebuild a .fai/.gzi/.bai/.csi/.crai that no longer fits its file (with pysam,
    atomically) instead of refusing it; also builds a missing BAM/CRAM index."""

    def __post_init__(self) -> None:
        if self.fmt != "auto" and self.fmt not in FORMATS:
            raise ConfigError(f"unknown format {self.fmt!r}; expected auto or one of "
                              f"{', '.join(FORMATS)}")
        for name in ("on_invalid", "on_unknown"):
            if getattr(self, name) not in POLICIES:
                raise ConfigError(f"{name} must be 'N' or 'error', got {getattr(self, name)!r}")
        if not isinstance(self.flags, ReadFilter):
            raise ConfigError(f"flags must be a ReadFilter, got {type(self.flags).__name__}")
        object.__setattr__(self, "region", tuple(as_regions(self.region or None)))
        if self.reference is not None:
            object.__setattr__(self, "reference", os.fspath(self.reference))

    @classmethod
    def of(cls, options: ReadOptions | None = None, **overrides) -> ReadOptions:
        """``options`` (default: the defaults) with the given fields replaced: how the public
        readers turn their keyword arguments into a ReadOptions. ``region=None`` means none."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown read option(s) {', '.join(unknown)}; expected "
                            f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        if "region" in overrides and overrides["region"] is None:
            overrides["region"] = ()
        base = options if options is not None else cls()
        return dataclasses.replace(base, **overrides) if overrides else base

    @classmethod
    def from_cli(cls, *, fmt: str = "auto", regions: Sequence[str] = (),
                 reference: str | None = None, include_secondary: bool = False,
                 include_supplementary: bool = False, include_qcfail: bool = False,
                 include_duplicates: bool = False, skip_unmapped: bool = False,
                 min_mapq: int = 0, allow_duplicates: bool = False, on_invalid: str = "N",
                 on_unknown: str = "error", reindex: bool = False) -> ReadOptions:
        """From the command line's reader options (same names as the flags)."""
        flags = ReadFilter(skip_secondary=not include_secondary,
                           skip_supplementary=not include_supplementary,
                           skip_qcfail=not include_qcfail, skip_duplicates=not include_duplicates,
                           skip_unmapped=skip_unmapped, min_mapq=min_mapq)
        return cls(fmt=fmt, region=tuple(regions), reference=reference, flags=flags,
                   allow_duplicates=allow_duplicates, on_invalid=on_invalid,
                   on_unknown=on_unknown, reindex=reindex)

    def format_of(self, path: str | os.PathLike) -> str:
        """The format of ``path``: ``fmt``, or detected from the content when "auto"."""
        return detect_format(path) if self.fmt == "auto" else self.fmt

    def to_dict(self) -> dict:
        """A JSON-able record (store.json, run metadata): regions as samtools strings."""
        return {"fmt": self.fmt, "region": [r.text or str(r) for r in self.region] or None,
                "reference": self.reference, "flags": dataclasses.asdict(self.flags),
                "allow_duplicates": self.allow_duplicates, "on_invalid": self.on_invalid,
                "on_unknown": self.on_unknown}

    @classmethod
    def from_dict(cls, data: dict) -> ReadOptions:
        """The inverse of ``to_dict`` (e.g. the options recorded in a token store's
        store.json)."""
        data = dict(data)
        flags = data.pop("flags", None)
        data["region"] = tuple(data.get("region") or ())
        if flags is not None:
            data["flags"] = ReadFilter(**flags)
        return cls.of(None, **data)
