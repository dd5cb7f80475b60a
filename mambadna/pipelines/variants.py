"""Zero-shot variant-effect scores: the log-likelihood ratio of ALT against REF under a causal
DNA language model, over a window around each variant of a VCF.

Windows (W = ``window`` bases, on each strand read 5' to 3')::

    REF window = reference[s, p) + REF + reference[p + len(REF), ...)     W bases
    ALT window = reference[s, p) + ALT + reference[p + len(REF), ...)     W bases

p is the variant's 0-based start (VCF POS - 1) and s = p - f, with f = W // 2 bases of left
flank. Both windows start at the same base and hold exactly W bases: after the allele the
reference continues from the base after REF, as far as needed, so an insertion's ALT window
ends earlier on the reference and a deletion's later. Equal lengths make the two sums comparable
(the same count of predicted bases); the shared start makes the f-base prefix identical, which
is what lets a recurrent model run it once (mambadna.pipelines.likelihood)::

    ll(window) = sum_{t=1}^{W-1} log p(x_t | x_<t)   (natural log; N targets left out)
    score      = ll(ALT window) - ll(REF window)      < 0: the model finds ALT less likely

The reverse strand is the same rule applied to the reverse-complemented contig (the variant at
n - p - len(REF), alleles reverse-complemented): in forward coordinates the reverse windows
end f bases after REF, and the shared prefix is the flank 3' of the variant. With
``rc_average`` (the default) score, ref_ll and alt_ll are the means of the two strands: a
causal model sees different context on each strand, and the mean treats both alike.

Every ALT of a record is scored (one row each); all alleles of a record share its prefix run,
and records at the same position share it too. Nothing here crashes on real-world VCFs: an ALT
that cannot be scored gets a ``status`` and an empty score, counted in the summary:

    symbolic        <DEL>, <*>, *, breakends: no sequence to score
    no_alt          ALT is '.'
    missing_contig  the contig is not in the reference
    contig_end      a window would run past a contig end, or the variant has no base before
                    it on a strand (``edge="shift"`` moves the window inside the contig: f
                    shrinks at the start, grows at the end)
    too_long        REF or ALT longer than the W - W//2 bases after the window's prefix
    ref_mismatch    REF differs from the reference (only with on_ref_mismatch="skip"; the
                    default is an error naming the VCF line; "warn" scores the variant with
                    the VCF's REF in the reference context, and warns)
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mambadna._version import __version__
from mambadna.alphabet import encode, reverse_complement
from mambadna.atomic import atomic_file
from mambadna.errors import AlphabetError, ConfigError, InputError
from mambadna.io import IndexedFasta
from mambadna.model import MambaDNA
from mambadna.pipelines.inference import prepare_model, resolve_device, trained_length
from mambadna.pipelines.likelihood import LikelihoodRunner, SiteBatches
from mambadna.pipelines.output import TABLE_FORMATS, atomic_output, check_output, output_format
from mambadna.pipelines.run import weights_checksum
from mambadna.pipelines.vcf import (
    VcfRecord,
    check_sorted,
    index_vcf,
    read_bed,
    read_vcf,
    write_annotated_vcf,
)

_log = logging.getLogger(__name__)

STATUSES = ("ok", "symbolic", "no_alt", "missing_contig", "contig_end", "too_long",
            "ref_mismatch")
COLUMNS = ("chrom", "pos", "id", "ref", "alt", "score", "ref_ll", "alt_ll", "window_start",
           "window_end", "status")
DEFAULT_WINDOW = 1024
MAX_DEFAULT_WINDOW = 4096
_BASES = re.compile(r"^[ACGTN]+$")
_SHOWN_WARNINGS = 10


@dataclass
class ScoreOptions:
    """How variants are scored (CLI options of the same names)."""

    window: int | None = None
    """Bases per window; default: the model's training length up to 4096, else 1024."""
    rc_average: bool = True
    """Score both strands and average them (False: the forward strand only)."""
    on_ref_mismatch: str = "error"
    """REF differs from the reference: "error" (naming the VCF line), "skip" or "warn"."""
    edge: str = "skip"
    """A window past a contig end: "skip" the variant (status contig_end) or "shift" the
    window inside the contig (the variant then sits off-centre)."""
    batch_size: int | None = None
    """Allele windows per forward pass; default 64 on CUDA, 8 on CPU (whose PyTorch scan
    holds a (batch, channels, length, state) tensor)."""
    device: str | None = None
    """"cpu", "cuda", "cuda:1"...; None: CUDA if available, else CPU."""
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32"."""
    method: str = "shared-prefix"
    """"shared-prefix" (run the common prefix once, carry the state) or "naive" (every
    allele's whole window from a zero state); the same scores, the first is faster."""

    def __post_init__(self) -> None:
        choices = {"on_ref_mismatch": ("error", "skip", "warn"), "edge": ("skip", "shift"),
                   "precision": ("auto", "bf16", "fp32"), "method": ("shared-prefix", "naive")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got "
                                  f"{getattr(self, name)!r}")
        if self.window is not None and self.window < 2:
            raise ConfigError(f"--window must be at least 2 bases, got {self.window}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")


# ---------------------------------------------------------------------- window placement


def place(p: int, r: int, lengths: list[int], n: int, window: int, edge: str) -> int | str:
    """The left flank f of the windows of a variant at p (REF r bases, alleles of ``lengths``
    incl. REF) on a strand of n bases, or the status saying why there is none."""
    flank = window // 2
    shortest = min(lengths)
    last = p + r + window - shortest  # the farthest base any window reads, minus f
    if max(lengths) > window - flank:
        return "too_long"
    f = flank if edge == "skip" else max(min(flank, p), last - n)
    if f < 1 or f > p or last - f > n or max(lengths) > window - f:
        return "contig_end"
    return f


def _span(p: int, r: int, a: int, f: int, window: int) -> tuple[int, int]:
    """Reference bases [start, end) that the REF and ALT windows read (strand coordinates)."""
    return p - f, p + r + window - f - min(r, a)


@dataclass
class _Strand:
    """A record on one strand: start p, REF length r, left flank f, tokens of the alleles."""

    p: int
    r: int
    f: int
    alleles: list[np.ndarray]  # REF first, then the scorable ALTs


@dataclass
class _Rows:
    """The output table being filled, one row per (record, ALT)."""

    columns: dict[str, list] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    strands: list[int] = field(default_factory=list)
    ordinals: list[int] = field(default_factory=list)  # the VCF record of each row

    def add(self, rec: VcfRecord, alt: str, status: str) -> int:
        c = self.columns
        for key, value in zip(("chrom", "pos", "id", "ref", "alt", "status"),
                              (rec.chrom, rec.pos, rec.id, rec.ref, alt, status)):
            c[key].append(value)
        for key in ("score", "ref_ll", "alt_ll"):
            c[key].append(0.0)
        c["window_start"].append(None)
        c["window_end"].append(None)
        self.strands.append(0)
        return len(self.strands) - 1

    def accumulate(self, row: int, score: float, ref_ll: float, alt_ll: float) -> None:
        """Add one strand's values to a row (the frame divides by the strands counted)."""
        c = self.columns
        c["score"][row] += score
        c["ref_ll"][row] += ref_ll
        c["alt_ll"][row] += alt_ll
        self.strands[row] += 1

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.columns, columns=list(COLUMNS))
        strands = np.asarray(self.strands, dtype=np.float64)
        scored = frame["status"].to_numpy() == "ok"
        for key in ("score", "ref_ll", "alt_ll"):
            values = frame[key].to_numpy(dtype=np.float64)
            frame[key] = np.where(scored, values / np.maximum(strands, 1), np.nan)
        for key in ("pos", "window_start", "window_end"):
            frame[key] = frame[key].astype("Int64")
        return frame


# ---------------------------------------------------------------------- records -> sites


class _Planner:
    """Turns VCF records into rows and the sites of their windows (both strands)."""

    def __init__(self, fasta: IndexedFasta, opts: ScoreOptions, window: int, rows: _Rows,
                 batches: SiteBatches, vcf: str | os.PathLike) -> None:
        self.fasta = fasta
        self.opts = opts
        self.window = window
        self.rows = rows
        self.batches = batches
        self.vcf = vcf
        self.missing: dict[str, int] = {}
        self.mismatches = 0

    def add(self, rec: VcfRecord) -> None:
        if rec.alts is None:
            self.rows.add(rec, ".", "no_alt")
            return
        n = self.fasta.lengths.get(rec.chrom)
        if n is None:
            self.missing[rec.chrom] = self.missing.get(rec.chrom, 0) + 1
            for alt in rec.alts:
                self.rows.add(rec, alt, "missing_contig")
            return
        ref = rec.ref.upper()
        if not self._ref_ok(rec, ref, n):
            for alt in rec.alts:
                self.rows.add(rec, alt, "ref_mismatch")
            return
        scorable = []
        for alt in rec.alts:
            ok = _BASES.match(alt.upper()) is not None
            row = self.rows.add(rec, alt, "ok" if ok else "symbolic")
            if ok:
                scorable.append((alt.upper(), row))
        if scorable:
            self._plan(rec, ref, scorable, n)

    def _ref_ok(self, rec: VcfRecord, ref: str, n: int) -> bool:
        """Whether REF can be scored; raises in "error" mode, warns in "warn" mode."""
        end = rec.start + len(ref)
        found = self.fasta.fetch(rec.chrom, min(rec.start, n), min(end, n)).decode().upper()
        if found == ref and end <= n:
            return True
        what = (f"REF {rec.ref!r} at {rec.chrom}:{rec.pos} does not match the reference "
                f"({found or 'nothing'!r} in {Path(self.fasta.path).name})" if end <= n else
                f"REF {rec.ref!r} at {rec.chrom}:{rec.pos} runs past the end of "
                f"{rec.chrom} ({n} bases)")
        if rec.line is None:  # BCF: no lines to name
            what += f" (record {rec.ordinal + 1} of the file)"
        if self.opts.on_ref_mismatch == "error":
            raise InputError(what, path=self.vcf, line=rec.line,
                             fix="check that the VCF was called against this reference (same "
                                 "assembly); `bcftools norm --check-ref w -f REF.fa` lists "
                                 "mismatches; or pass --on-ref-mismatch skip|warn")
        self.mismatches += 1
        if self.opts.on_ref_mismatch == "skip" or not _BASES.match(ref) or end > n:
            return False
        if self.mismatches <= _SHOWN_WARNINGS:
            _log.warning("%s:%s: %s; scored with the VCF's REF in the reference context",
                         self.vcf, rec.line, what)
        return True

    def _plan(self, rec: VcfRecord, ref: str, scorable: list[tuple[str, int]], n: int) -> None:
        w, r = self.window, len(ref)
        lengths = [r] + [len(a) for a, _ in scorable]
        tokens = [encode(ref)] + [encode(a) for a, _ in scorable]
        strands = [(+1, rec.start, tokens)]
        if self.opts.rc_average:
            strands.append((-1, n - rec.start - r, [reverse_complement(t) for t in tokens]))
        placed = []
        for sign, p, alleles in strands:
            f = place(p, r, lengths, n, w, self.opts.edge)
            if isinstance(f, str):
                for _alt, row in scorable:
                    self.rows.columns["status"][row] = f
                return
            placed.append((sign, _Strand(p, r, f, alleles)))
        spans = [_forward(sign, _span(s.p, r, min(lengths), s.f, w), n) for sign, s in placed]
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        segment = self._tokens(rec.chrom, lo, hi)
        for sign, strand in placed:
            seq, origin = (segment, lo) if sign > 0 else (reverse_complement(segment), n - hi)
            self._add_site(rec, sign, strand, seq, origin, [row for _, row in scorable])
        for (alt, row) in scorable:
            bounds = [_forward(sign, _span(s.p, r, len(alt), s.f, w), n) for sign, s in placed]
            self.rows.columns["window_start"][row] = min(a for a, _ in bounds)
            self.rows.columns["window_end"][row] = max(b for _, b in bounds)

    def _add_site(self, rec: VcfRecord, sign: int, strand: _Strand, seq: np.ndarray,
                  origin: int, targets: list[int]) -> None:
        p, r, f, w = strand.p, strand.r, strand.f, self.window
        prefix = seq[p - f - origin:p - origin]
        alleles = []
        for allele in strand.alleles:
            right = seq[p + r - origin:p + r + w - f - len(allele) - origin]
            # the same allele text after the same REF length gives the same suffix
            alleles.append(((r, allele.tobytes()), np.concatenate([allele, right])))
        pairs = [(row, 0, k + 1) for k, row in enumerate(targets)]
        self.batches.add((rec.chrom, sign, p, f), prefix, alleles, pairs)

    def _tokens(self, chrom: str, start: int, end: int) -> np.ndarray:
        try:
            return encode(self.fasta.fetch(chrom, start, end), on_invalid="N", offset=start)
        except AlphabetError as err:
            raise err.with_location(path=self.fasta.path, record=chrom) from None

    def report(self) -> None:
        """Warnings for what was left out, once per kind (the summary counts them)."""
        names = self.fasta.lengths
        for chrom, count in self.missing.items():
            other = chrom[3:] if chrom.startswith("chr") else f"chr{chrom}"
            hint = (f"; the reference has {other!r}: the VCF and the reference name contigs "
                    f"differently (rename with `bcftools annotate --rename-chrs`)"
                    if other in names else "")
            _log.warning("%d records on contig %r, which the reference does not have: not "
                         "scored (status missing_contig)%s", count, chrom, hint)
        if self.mismatches > _SHOWN_WARNINGS and self.opts.on_ref_mismatch == "warn":
            _log.warning("%d records in all whose REF does not match the reference",
                         self.mismatches)


def _forward(sign: int, span: tuple[int, int], n: int) -> tuple[int, int]:
    """A strand's [start, end) in forward coordinates of a contig of n bases."""
    return span if sign > 0 else (n - span[1], n - span[0])


# ---------------------------------------------------------------------- the pipeline


@dataclass
class VariantScores:
    """The scores (one row per record and ALT, in VCF order; ``COLUMNS``), how many rows have
    each status, the provenance, and timing."""

    frame: pd.DataFrame
    counts: dict[str, int]
    metadata: dict
    n_records: int
    windows_run: int
    seconds: float
    out: Path | None = None
    contig_lengths: dict[str, int] = field(default_factory=dict)
    """Of the reference, by name."""

    @property
    def n_scored(self) -> int:
        return self.counts.get("ok", 0)

    def summary(self) -> str:
        """One line: records, ALTs scored and left out (by status), speed."""
        rate = self.n_scored / self.seconds if self.seconds > 0 else 0.0
        left = ", ".join(f"{self.counts[s]} {s}" for s in STATUSES[1:] if self.counts.get(s))
        return (f"{self.n_records} records, {self.n_scored} of {len(self.frame)} ALTs scored"
                + (f" (not scored: {left})" if left else "")
                + f" in {self.seconds:.1f} s ({rate:,.1f} variants/s)")


VCF_FORMATS = {".vcf.gz": "vcf.gz", ".vcf": "vcf"}


def output_kind(path: str | os.PathLike) -> str:
    """tsv, csv, parquet, vcf or vcf.gz, from the name of ``path``."""
    name = Path(path).name.lower()
    for suffix, kind in VCF_FORMATS.items():
        if name.endswith(suffix):
            return kind
    return output_format(path, {**TABLE_FORMATS, **VCF_FORMATS})


def _window(model: MambaDNA, window: int | None) -> int:
    if window is not None:
        return window
    trained = trained_length(model)
    return min(trained, MAX_DEFAULT_WINDOW) if trained else DEFAULT_WINDOW


def _check_model(model: MambaDNA) -> None:
    if model.config.bidirectional:
        raise ConfigError("variant scores need a causal (unidirectional) language model; this "
                          "one is bidirectional, so its next-base predictions see the base "
                          "they predict", fix="use a model pretrained with bidirectional=False")
    if model.config.num_labels:
        _log.warning("this model is a classifier: its language-model head was not trained "
                     "by finetuning; scores are best taken from the pretrained model")


def score_variants(model_or_dir: MambaDNA | str | os.PathLike, reference: str | os.PathLike,
                   vcf: str | os.PathLike, out: str | os.PathLike | None = None, *,
                   bed_regions: str | os.PathLike | None = None, force: bool = False,
                   options: ScoreOptions | None = None, **fields) -> VariantScores:
    """Score every ALT of the VCF ``vcf`` against the indexed FASTA ``reference`` (see the
    module docstring for the windows and the score).

    model_or_dir: a causal MambaDNA or its saved folder. out: also write the scores: a table
    (.tsv, .csv, .parquet) or the input VCF with MAMBADNA_* INFO fields (.vcf, or .vcf.gz:
    bgzipped with a .tbi index), atomically. bed_regions: score only records overlapping these
    BED intervals (a VCF output keeps only those records). options: a ScoreOptions, or its
    fields as keywords (window, rc_average, on_ref_mismatch, edge, batch_size, device,
    precision, method).

    Example::

        import mambadna as md
        result = md.score_variants("runs/pre/model", "ref.fa", "calls.vcf.gz", window=1024)
        result.frame.sort_values("score").head()      # the most damaging first
    """
    started = time.perf_counter()
    opts = options or ScoreOptions(**fields)
    kind = None
    if out is not None:
        kind = output_kind(out)
        check_output(out, force=force)
    regions = read_bed(bed_regions) if bed_regions is not None else None
    if kind == "vcf.gz":  # before any work: tabix will need sorted records
        check_sorted(read_vcf(vcf, regions), vcf)
    n_records = 0
    with IndexedFasta(reference) as fasta:
        model = prepare_model(model_or_dir, resolve_device(opts.device))
        _check_model(model)
        window = _window(model, opts.window)
        bf16 = opts.precision == "bf16" or (opts.precision == "auto"
                                            and model.device.type == "cuda")
        runner = LikelihoodRunner(model, shared_prefix=opts.method == "shared-prefix",
                                  bf16=bf16)
        rows = _Rows()
        batch_size = opts.batch_size or (64 if model.device.type == "cuda" else 8)
        batches = SiteBatches(runner, batch_size, rows.accumulate)
        planner = _Planner(fasta, opts, window, rows, batches, vcf)
        was_training = model.training
        model.eval()
        try:
            for rec in read_vcf(vcf, regions):  # streamed: only the rows stay in memory
                n_records += 1
                planner.add(rec)
                rows.ordinals.extend([rec.ordinal] * (len(rows.strands) - len(rows.ordinals)))
            batches.flush()
        finally:
            model.train(was_training)
        planner.report()
        lengths = dict(fasta.lengths)
    frame = rows.frame()
    counts = {s: int(n) for s, n in frame["status"].value_counts().items()}
    metadata = _metadata(model, model_or_dir, reference, vcf, opts, window, bf16, bed_regions)
    result = VariantScores(frame, counts, metadata, n_records, batches.windows_run,
                           time.perf_counter() - started, contig_lengths=lengths)
    if out is not None:
        write_scores(result, rows.ordinals, vcf, out, kind, force=force)
        result.out = Path(out)
    frame.attrs["mambadna"] = metadata
    return result


def _metadata(model, model_or_dir, reference, vcf, opts: ScoreOptions, window: int,
              bf16: bool, bed_regions) -> dict:
    checksum, of = weights_checksum(model)
    return {
        "version": __version__,
        "model": os.fspath(model_or_dir) if isinstance(model_or_dir, (str, os.PathLike))
        else None,
        "model_config": model.config.to_dict(),
        "weights_sha256": checksum,
        "weights_checksum_of": of,
        "reference": os.fspath(reference),
        "vcf": os.fspath(vcf),
        "bed_regions": os.fspath(bed_regions) if bed_regions is not None else None,
        "window": window,
        "left_flank": window // 2,
        "strands": "mean of both strands" if opts.rc_average else "forward strand",
        "rc_average": opts.rc_average,
        "edge": opts.edge,
        "on_ref_mismatch": opts.on_ref_mismatch,
        "method": opts.method,
        "precision": "bf16" if bf16 else "fp32",
        "score": "ll(ALT window) - ll(REF window), natural log, sum of next-base "
                 "log-probabilities over W-base windows that start at the same base",
        "coordinates": "pos: VCF POS (1-based); window_start, window_end: 0-based, "
                       "half-open",
    }


def write_scores(result: VariantScores, ordinals: list[int], vcf, out, kind: str, *,
                 force: bool) -> None:
    """Write the scores as a table or as the annotated input VCF, atomically."""
    frame, metadata = result.frame, result.metadata
    if kind in ("vcf", "vcf.gz"):
        kept: dict[int, list[tuple]] = {}
        values = frame[["score", "ref_ll", "alt_ll", "status"]].itertuples(index=False)
        for ordinal, (score, ref_ll, alt_ll, status) in zip(ordinals, values):
            kept.setdefault(ordinal, []).append(tuple(
                None if isinstance(v, float) and np.isnan(v) else v
                for v in (score, ref_ll, alt_ll, status)))
        meta = ("##mambadna_score_variants=" + ";".join(
            f"{k}={metadata[k]}" for k in ("version", "window", "strands", "method",
                                           "precision", "weights_sha256", "model")))
        contigs = {name: result.contig_lengths.get(name)
                   for name in dict.fromkeys(frame["chrom"])}
        with atomic_output(out, force=force) as tmp:
            if kind == "vcf":
                write_annotated_vcf(vcf, tmp, kept, meta, contigs, compressed=False)
                return
            with atomic_file(Path(f"{out}.tbi")) as index:
                write_annotated_vcf(vcf, tmp, kept, meta, contigs, compressed=True)
                index_vcf(tmp, index)
        return
    with atomic_output(out, force=force) as tmp:
        if kind == "parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            meta = {**(table.schema.metadata or {}), b"mambadna": json.dumps(metadata).encode()}
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        else:
            frame.to_csv(tmp, sep="\t" if kind == "tsv" else ",", index=False, na_rep="")
