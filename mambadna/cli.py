"""The ``mambadna`` command line: each command parses options and calls one library function.

Domain errors (mambadna.errors) are printed as ``file:line: message`` and exit with status 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys

import click

from mambadna._version import __version__
from mambadna.allocator import retain_freed_memory
from mambadna.errors import MambaDNAError, OutputError


class _Group(click.Group):
    """A click group that turns domain errors into one clean line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # the reader of stdout stopped early (`... -o - | head`): stop quietly, as Unix
            # tools do on SIGPIPE, without a traceback at exit from flushing stdout again
            with contextlib.suppress(OSError, ValueError):  # no real stdout (tests)
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except MambaDNAError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)
        except OSError as err:
            # a full disk or read-only filesystem met outside our atomic writers (e.g.
            # Lightning's logs): still one line with the path and the fix, not a traceback
            domain = OutputError.from_os_error(err)
            if domain is None:
                raise
            click.echo(f"error: {domain}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mambadna")
def cli() -> None:
    """Mamba models for long DNA sequences: read, tokenize, train, classify, embed."""


@cli.command("simulate")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: <species>.fa, <species>.<split>.fa, manifest.tsv, "
                   "simulation.json.")
@click.option("--species", default=None,
              help="A number N (the first N species of the tree) or comma-separated names. "
                   "Default: every leaf (human, chimpanzee, bonobo, gorilla, orangutan).")
@click.option("--length", default=1_000_000, show_default=True, type=click.IntRange(min=1),
              help="Bases per genome.")
@click.option("--n-chromosomes", default=4, show_default=True, type=click.IntRange(min=1),
              help="Chromosomes per genome; with >= 3 the last is test and the one before val.")
@click.option("--tree", default=None,
              help="Newick species tree (ultrametric, branch lengths in --time-units). "
                   "Default: the great apes.")
@click.option("--time-units", default="myr", show_default=True,
              type=click.Choice(["myr", "yr", "gen"]), help="Units of the tree's branch lengths.")
@click.option("--divergence-scale", default=1.0, show_default=True, type=float,
              help="Multiplies substitution, indel and insertion rates: > 1 easier, < 1 harder.")
@click.option("--insertion-rate", default=0.45, show_default=True, type=click.FloatRange(min=0),
              help="Lineage-specific transposon insertions per Mb per million years: the "
                   "signal a classifier can learn across chromosomes.")
@click.option("--spectrum-bias", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Lineage substitution signatures: each branch's trinucleotide signature "
                   "at this multiple of the substitution rate (0: none; ~100: a dense signal).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed; the output is a function of the seed and options.")
@click.option("--softmask", is_flag=True, help="Write interspersed repeats in lowercase.")
@click.option("--force", is_flag=True, help="Replace an existing simulation in --out-dir.")
@click.option("--quiet", is_flag=True, help="No progress bar on stderr.")
def simulate(out_dir, species, length, n_chromosomes, tree, time_units, divergence_scale,
             insertion_rate, spectrum_bias, seed, softmask, force, quiet) -> None:
    """Simulate genomes of related species along a species tree (msprime)."""
    from mambadna.simulate import parse_species, simulate_species, summary

    names, count = parse_species(species)
    result = simulate_species(out_dir, species=names, n_species=count, length=length,
                              n_chromosomes=n_chromosomes, tree=tree, time_units=time_units,
                              divergence_scale=divergence_scale, insertion_rate=insertion_rate,
                              spectrum_bias=spectrum_bias, seed=seed, softmask=softmask,
                              force=force, progress=False if quiet else None)
    click.echo(summary(result))


@cli.group("data")
def data() -> None:
    """Data manifests of real genomes: check them and download the files they list."""


@data.command("fetch")
@click.argument("manifest", type=click.Path())
@click.option("--dest", required=True, type=click.Path(file_okay=False),
              help="Folder the files are downloaded into (created if missing).")
@click.option("--only", multiple=True, help="Fetch only this entry (repeatable).")
@click.option("--verify", "verify_only", is_flag=True,
              help="Re-check the checksums of files already in --dest; download nothing.")
@click.option("--base-url", default=None,
              help="Base for relative URLs in the manifest (a URL or a local folder).")
@click.option("--allow-unverified", is_flag=True,
              help="Download entries that have no checksum and record their sha256.")
@click.option("--retries", default=5, show_default=True, type=click.IntRange(min=0),
              help="Retries per file on connection errors and HTTP 5xx.")
@click.option("--keep-going", is_flag=True,
              help="On a failed file, go on with the others; exit 1 at the end.")
@click.option("--quiet", is_flag=True, help="No progress bars on stderr.")
def data_fetch(manifest, dest, only, verify_only, base_url, allow_unverified, retries,
               keep_going, quiet) -> None:
    """Download the files of MANIFEST, resuming partial downloads and verifying checksums."""
    from mambadna.manifests.fetch import FetchOptions, fetch_manifest
    from mambadna.progress import DownloadBars

    results = fetch_manifest(
        manifest, dest, only=only, verify_only=verify_only, base_url=base_url,
        options=FetchOptions(retries=retries, allow_unverified=allow_unverified),
        progress=None if quiet else DownloadBars(), keep_going=keep_going)
    for r in results:
        click.echo(f"{r.status:<11} {r.name:<24} {r.path}  {r.error or r.checksum or '-'}")
    bad = [r for r in results if not r.ok]
    if bad:
        click.echo(f"error: {len(bad)} of {len(results)} files are missing, do not match "
                   "their checksum or cannot be verified", err=True)
        sys.exit(1)


@data.command("check")
@click.argument("manifests", nargs=-1, required=True,
                type=click.Path())
def data_check(manifests) -> None:
    """Validate data manifests against the schema and list their entries."""
    from mambadna.manifests import load_manifest

    for path in manifests:
        manifest = load_manifest(path)
        click.echo(f"{path}: {manifest.name}, {len(manifest.entries)} files")
        for e in manifest.entries:
            split = e.split or ("per record" if e.records else "-")
            source = e.checksum_source and "listed in " + e.checksum_source.rsplit("/", 1)[-1]
            click.echo(f"  {e.name:<24} {e.label or '-':<12} {split:<10} "
                       f"{e.checksum or source or 'UNVERIFIABLE'}")


@data.command("split")
@click.argument("manifest", type=click.Path())
@click.option("--dest", required=True, type=click.Path(),
              help="Folder the manifest's files were fetched into.")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder for <label>.<split>.fa files and manifest.tsv (for finetune).")
@click.option("--only", multiple=True, help="Use only this entry (repeatable).")
@click.option("--force", is_flag=True, help="Replace an earlier split folder.")
def data_split(manifest, dest, out_dir, only, force) -> None:
    """Cut fetched genomes into per-split FASTA files (held-out chromosomes) + manifest.tsv."""
    from mambadna.manifests import write_splits

    result = write_splits(manifest, dest, out_dir, only=only, force=force)
    for (name, split), path in sorted(result.files.items()):
        click.echo(f"{split:<6} {name:<16} {path}")
    for entry, record in result.skipped:
        click.echo(f"note: {entry}: record {record!r} listed in the manifest is not in the "
                   "file; skipped", err=True)
    if result.manifest is not None:
        click.echo(f"manifest: {result.manifest}")


def _reader_options(command):
    """Options that say how inputs are read: the fields of ReadOptions.from_cli, which the
    command builds once and passes on unchanged."""
    options = [
        click.option("--format", "fmt", default="auto", show_default=True,
                     type=click.Choice(["auto", "fasta", "fastq", "sam", "bam", "cram",
                                        "genbank", "embl"]),
                     help="Input format; auto detects it from the content."),
        click.option("--on-invalid", default="N", show_default=True,
                     type=click.Choice(["N", "error"]),
                     help="IUPAC ambiguity codes (R Y S W K M B D H V): read as N, or error."),
        click.option("--on-unknown", default="error", show_default=True,
                     type=click.Choice(["error", "N"]),
                     help="Any other non-base character: error, or read as N."),
        click.option("--allow-duplicates", is_flag=True,
                     help="Accept repeated record names within a file."),
        click.option("--region", "regions", multiple=True,
                     help="Only this region (samtools style, 1-based: chr1:1001-2000; "
                          "{NAME}:1-100 for names with colons); repeatable, may overlap (a "
                          "read is read once). Needs an indexed FASTA, BAM or CRAM."),
        click.option("--reference", type=click.Path(dir_okay=False),
                     help="Reference FASTA of CRAM inputs (required for CRAM)."),
        click.option("--reindex", is_flag=True,
                     help="Rebuild an index (.fai, .gzi, .bai, .csi, .crai) older than its "
                          "file instead of refusing it; builds a missing BAM/CRAM index."),
        click.option("--include-secondary", is_flag=True, help="Keep secondary alignments."),
        click.option("--include-supplementary", is_flag=True,
                     help="Keep supplementary alignments."),
        click.option("--include-qcfail", is_flag=True, help="Keep reads that failed QC."),
        click.option("--include-duplicates", is_flag=True,
                     help="Keep reads marked as duplicates."),
        click.option("--skip-unmapped", is_flag=True, help="Drop unmapped reads."),
        click.option("--min-mapq", default=0, show_default=True, type=click.IntRange(0, 255),
                     help="Minimum mapping quality of mapped reads."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command("validate")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--all", "collect_all", is_flag=True,
              help="Report every problem (up to 1000 per file), not only the first.")
@click.option("--quiet", is_flag=True, help="No progress bar on stderr.")
@_reader_options
def validate(inputs, collect_all, quiet, **read) -> None:
    """Check that every record of INPUT... can be read; summarise each file (- is stdin)."""
    from mambadna.io.validate import validate as validate_files

    summaries = validate_files(inputs, _read_options(inputs, read), collect_all=collect_all,
                               progress=False if quiet else None)
    for summary in summaries:
        click.echo(summary.line())
        for problem in summary.problems:
            click.echo(str(problem), err=True)
        if summary.truncated_problems:
            click.echo(f"{summary.path}: {summary.truncated_problems} more problems not shown",
                       err=True)
    if not all(s.ok for s in summaries):
        sys.exit(1)


@cli.command("tokenize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Token store folder to create (tokens.bin, index.parquet, store.json).")
@click.option("--force", is_flag=True, help="Replace an existing token store at --out.")
@click.option("--quiet", is_flag=True, help="No progress bar on stderr.")
@_reader_options
def tokenize(inputs, out, force, quiet, **read) -> None:
    """Turn FASTA/FASTQ/SAM/BAM/CRAM records into a token store (one ragged uint8 array)."""
    from mambadna.data.store import write_token_store

    store = write_token_store(inputs, out, _read_options(inputs, read), force=force,
                              progress=False if quiet else None)
    n_count = int(store.index["n_count"].sum())
    click.echo(f"{store.path}: {len(store)} records, {store.total_length} bases "
               f"({n_count} N) from {len(inputs)} input(s)")


def _read_options(inputs, read: dict):
    """ReadOptions.from_cli; an invalid option (e.g. --region chr1:100-50) names the inputs it
    was given for."""
    from mambadna.errors import ConfigError
    from mambadna.io import ReadOptions

    try:
        return ReadOptions.from_cli(**read)
    except ConfigError as err:
        if "region" not in err.message:
            raise
        raise err.with_location(path=", ".join(map(str, inputs))) from None


def _check_strict(model: str, strict: bool) -> None:
    """--strict: refuse an unverifiable model folder before any input is read."""
    if strict:
        from mambadna.pipelines.inference import require_verified

        require_verified(model)


def _summary(line: str, *outs) -> None:
    """The closing line of classify/embed: on stderr when results go to stdout (an output
    named -), which then carries nothing but the results."""
    click.echo(line, err="-" in outs)


def rc_average_option(default: bool = False):
    """``--rc-average/--no-rc-average``: one option, one help, for every command that runs a
    model over windows (the library parameter of the same name: ``rc_average``)."""
    return click.option(
        "--rc-average/--no-rc-average", default=default, show_default=True,
        help="Also run each window's reverse complement and average the two strands "
             "(embeddings: the mean vector; predictions and scores: the mean "
             "log-probabilities). Not with --stream; an RC-equivariant model is the same on "
             "both strands already.")


def _pipeline_options(command):
    """Options of classify and embed: model, output, windows, batching, devices."""
    options = [
        click.option("--model", required=True, type=click.Path(),
                     help="Saved model folder (RUN_DIR/model)."),
        click.option("--bed", type=click.Path(dir_okay=False), default=None,
                     help="Also write the windows as BED6+ (0-based, half-open; for bedtools "
                          "and genome browsers); - for stdout."),
        click.option("--window", type=click.IntRange(min=1), default=None,
                     help="Bases per window. Default: the model's training length, else 1024."),
        click.option("--stride", type=click.IntRange(min=1), default=None,
                     help="Bases between window starts. Default: the window (no overlap)."),
        click.option("--min-window", type=click.IntRange(min=1), default=None,
                     help="Keep a record's last partial window (or a short record) if it has "
                          "at least this many bases. Default: half the window."),
        click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
                     help="Windows per forward pass (--stream: records side by side)."),
        click.option("--stream", is_flag=True,
                     help="Carry the model state along each record: every window sees the "
                          "whole record before it; memory does not grow with record length."),
        rc_average_option(),
        click.option("--device", default="auto", show_default=True,
                     help="auto (CUDA if available), cpu, cuda, cuda:1, ..."),
        click.option("--devices", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Split the records over this many GPUs (one process each; with "
                          "--device cpu, this many CPU processes)."),
        click.option("--context-parallel", default=1, show_default=True,
                     type=click.IntRange(min=1),
                     help="GPUs of --devices that split each window along its length "
                          "(windows longer than one GPU holds; exact)."),
        click.option("--precision", default="auto", show_default=True,
                     type=click.Choice(["auto", "bf16", "fp32"]),
                     help="auto: bf16 autocast on CUDA, fp32 on CPU."),
        click.option("--force", is_flag=True, help="Replace an existing output file."),
        click.option("--quiet", is_flag=True, help="No progress display on stderr."),
        click.option("--strict", is_flag=True,
                     help="Refuse a model folder whose config.json records no checksum of its "
                          "weights (by default it loads with a warning)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command("classify")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Predictions table: .tsv, .csv or .parquet (format from the extension); "
                   "- for TSV on stdout. An input - reads stdin.")
@click.option("--per-window", is_flag=True,
              help="Add one row per window (with start, end) after each record's row.")
@_pipeline_options
@_reader_options
def classify(inputs, out, per_window, model, bed, window, stride, min_window, batch_size,
             stream, rc_average, device, devices, context_parallel, precision, force, quiet,
             strict,
             **read) -> None:
    """Predict the label (e.g. species) of every record of INPUT... from its windows."""
    from mambadna.pipelines.classify import classify_run
    from mambadna.pipelines.run import RunOptions

    _check_strict(model, strict)
    opts = RunOptions(window=window, stride=stride, min_window=min_window,
                      batch_size=batch_size, rc_average=rc_average, stream=stream,
                      device=None if device == "auto" else device, devices=devices,
                      context_parallel=context_parallel, precision=precision,
                      progress=False if quiet else None,
                      read=_read_options(inputs, read))
    result = classify_run(model, inputs, out, per_window=per_window, force=force, options=opts,
                          bed=bed)
    records = result.frame["start"].isna().sum() if per_window else len(result.frame)
    _summary(f"{result.out}: {records} records, {result.n_windows} windows, "
             f"{result.bases} bases in {result.seconds:.1f} s", out, bed)


@cli.command("embed")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Embeddings Parquet file: one row per window (source, record_id, start, "
                   "end, strand, n_fraction, embedding); .tsv or - (stdout) for TSV.")
@click.option("--pool", default="mean", show_default=True,
              type=click.Choice(["mean", "max", "last", "cls"]),
              help="Window vector: mean or max over non-N bases, the last base's state, or "
                   "the state at a CLS token appended after the window (for models trained "
                   "with one).")
@click.option("--layer", "layers", default="-1", show_default=True,
              help="Block(s) whose output is embedded: an index (0 = first, -1 = last) or "
                   "several, comma-separated (-1,-2), averaged.")
@_pipeline_options
@_reader_options
def embed(inputs, out, pool, layers, model, bed, window, stride, min_window, batch_size,
          stream, rc_average, device, devices, context_parallel, precision, force, quiet,
          strict, **read) -> None:
    """Write pooled embeddings of the windows of INPUT... to Parquet."""
    from mambadna.pipelines.embed import embed_run
    from mambadna.pipelines.run import RunOptions

    _check_strict(model, strict)
    opts = RunOptions(window=window, stride=stride, min_window=min_window,
                      batch_size=batch_size, rc_average=rc_average, stream=stream,
                      device=None if device == "auto" else device, devices=devices,
                      context_parallel=context_parallel, precision=precision,
                      progress=False if quiet else None,
                      read=_read_options(inputs, read))
    result = embed_run(model, inputs, out, pool=pool, layers=layers, force=force, options=opts,
                       bed=bed)
    _summary(f"{result.out}: {result.n_records} records, {result.n_windows} windows, "
             f"{result.bases} bases in {result.seconds:.1f} s "
             f"({result.bases_per_second:,.0f} bases/s)", out, bed)


@cli.command("score-variants")
@click.argument("vcf", type=click.Path())
@click.option("--model", required=True, type=click.Path(),
              help="Saved causal language model folder (RUN_DIR/model of pretrain).")
@click.option("--reference", required=True, type=click.Path(dir_okay=False),
              help="Indexed reference FASTA (plain or bgzip, with .fai) the VCF was called on.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Scores: .tsv, .csv or .parquet table, or .vcf.gz (the input VCF with "
                   "MAMBADNA_* INFO fields, bgzipped and tabix-indexed) or .vcf.")
@click.option("--window", type=click.IntRange(min=2), default=None,
              help="Bases per window, the variant after the first half. Default: the model's "
                   "training length up to 4096, else 1024.")
@click.option("--bed-regions", type=click.Path(dir_okay=False), default=None,
              help="Score only records overlapping these BED intervals.")
@rc_average_option(default=True)
@click.option("--on-ref-mismatch", default="error", show_default=True,
              type=click.Choice(["error", "skip", "warn"]),
              help="REF differs from the reference: stop naming the VCF line, leave the "
                   "variant out, or score it with the VCF's REF and warn.")
@click.option("--edge", default="skip", show_default=True, type=click.Choice(["skip", "shift"]),
              help="A window past a contig end: leave the variant out, or move the window "
                   "inside the contig.")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Allele windows per forward pass. Default: 64 on CUDA, 8 on CPU.")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "bf16", "fp32"]),
              help="auto: bf16 autocast on CUDA, fp32 on CPU.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--strict", is_flag=True,
              help="Refuse a model folder whose config.json records no checksum of its "
                   "weights (by default it loads with a warning).")
def score_variants(vcf, model, reference, out, window, bed_regions, rc_average,
                   on_ref_mismatch, edge, batch_size, device, precision, force,
                   strict) -> None:
    """Score every ALT of VCF: log-likelihood of the ALT window minus the REF window."""
    from mambadna.pipelines.variants import ScoreOptions
    from mambadna.pipelines.variants import score_variants as run_scoring

    _check_strict(model, strict)
    opts = ScoreOptions(window=window, rc_average=rc_average, on_ref_mismatch=on_ref_mismatch,
                        edge=edge, batch_size=batch_size,
                        device=None if device == "auto" else device, precision=precision)
    result = run_scoring(model, reference, vcf, out, bed_regions=bed_regions, force=force,
                         options=opts)
    click.echo(f"{result.out}: {result.summary()}")


@cli.command("evaluate")
@click.option("--model", required=True, type=click.Path(),
              help="Saved classifier folder (RUN_DIR/model).")
@click.option("--manifest", required=True, type=click.Path(),
              help="Manifest TSV (path, label, split) of labelled test files.")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder to create: predictions.tsv, metrics.json, report.md, plots.")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["test", "val", "train"]), help="Manifest rows to evaluate.")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="Bases per window. Default: the model's training length.")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Bases between window starts. Default: the window (no overlap).")
@click.option("--min-window", type=click.IntRange(min=1), default=None,
              help="Smallest last partial window kept. Default: half the window.")
@click.option("--baseline", default=None,
              help="'kmer': fit a k-mer naive Bayes on train rows and score it on the same "
                   "windows; or a folder from `mambadna baseline fit`.")
@click.option("--train-manifest", type=click.Path(), default=None,
              help="Manifest whose train rows fit the k-mer baseline. Default: --manifest.")
@click.option("--k", "k", default=6, show_default=True, type=click.IntRange(1, 12),
              help="k-mer length of the baseline.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Windows per forward pass.")
@rc_average_option()
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the bootstrap intervals.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--quiet", is_flag=True, help="No progress display on stderr.")
@click.option("--strict", is_flag=True,
              help="Refuse a model folder whose config.json records no checksum of its "
                   "weights (by default it loads with a warning).")
def evaluate(model, manifest, out_dir, split, window, stride, min_window, baseline,
             train_manifest, k, batch_size, rc_average, device, seed, force, quiet,
             strict) -> None:
    """Score a classifier on labelled files against chance, majority and k-mer baselines."""
    from mambadna.pipelines.evaluate import evaluate as run_evaluation
    from mambadna.pipelines.evaluation_report import summary

    _check_strict(model, strict)

    result = run_evaluation(model, manifest, out_dir, split=split, window=window, stride=stride,
                            min_window=min_window, baseline=baseline,
                            train_manifest=train_manifest, k=k, batch_size=batch_size,
                            rc_average=rc_average,
                            device=None if device == "auto" else device, force=force,
                            progress=False if quiet else None, seed=seed)
    click.echo(summary(result.metrics, result.files))
    click.echo(f"{result.out_dir}: done in {result.seconds:.1f} s")


@cli.command("plot-run")
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Figure file (.png, .svg or .pdf). Default: RUN_DIR/training_curves.png.")
@click.option("--panel", "panels", multiple=True, default=("loss", "accuracy"),
              show_default=True,
              type=click.Choice(["loss", "bits per base", "accuracy", "learning rate",
                                 "sequence length"]),
              help="Curves to draw, one panel each (repeatable); panels without data are "
                   "left out.")
def plot_run_command(run_dir, out, panels) -> None:
    """Draw the training curves of a pretrain/finetune RUN_DIR from its metrics.csv."""
    from mambadna.plots import plot_run

    click.echo(f"{plot_run(run_dir, out, panels=panels)}")


@cli.group("baseline")
def baseline() -> None:
    """The k-mer naive Bayes baseline on its own: fit it on a manifest, predict files."""


@baseline.command("fit")
@click.option("--manifest", required=True, type=click.Path(),
              help="Finetuning manifest TSV (path, label, split); its train rows are used.")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder to create: baseline.json, log_probs.npy.")
@click.option("--k", "k", default=6, show_default=True, type=click.IntRange(1, 12),
              help="k-mer length.")
@click.option("--alpha", default=1.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Laplace smoothing.")
@click.option("--split", default="train", show_default=True,
              type=click.Choice(["train", "val", "test"]), help="Manifest rows to fit on.")
@click.option("--windows-per-class", type=click.IntRange(min=1), default=None,
              help="Sample this many windows per label as finetuning does, instead of "
                   "counting every k-mer of the records (the default).")
@click.option("--window", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Window length of --windows-per-class.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of --windows-per-class.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def baseline_fit(manifest, out_dir, k, alpha, split, windows_per_class, window, seed,
                 force) -> None:
    """Fit the k-mer naive Bayes baseline on the train rows of MANIFEST."""
    from mambadna.baselines import fit_kmer_baseline

    nb = fit_kmer_baseline(manifest, k=k, alpha=alpha, split=split, window=window,
                           n_windows_per_class=windows_per_class, seed=seed)
    path = nb.save(out_dir, force=force)
    counts = ", ".join(f"{x}: {n:,}" for x, n in nb.summary["kmers_per_label"].items())
    click.echo(f"{path}: k={nb.k}, alpha={nb.alpha}, {len(nb.labels)} labels "
               f"({nb.summary['training']}; k-mers of both strands {counts})")


@baseline.command("predict")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--baseline", "baseline_dir", required=True, type=click.Path(),
              help="Folder written by `mambadna baseline fit`.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Predictions table: .tsv, .csv or .parquet (format from the extension).")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="Score windows of this many bases and average them per record. "
                   "Default: each record whole.")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Bases between window starts. Default: the window.")
@click.option("--min-window", type=click.IntRange(min=1), default=None,
              help="Smallest last partial window kept. Default: half the window.")
@click.option("--per-window", is_flag=True, help="Add one row per window (needs --window).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def baseline_predict(inputs, baseline_dir, out, window, stride, min_window, per_window,
                     force) -> None:
    """Predict the label of every record of INPUT... with a saved k-mer baseline."""
    from mambadna.pipelines.baseline import predict_kmer

    frame = predict_kmer(baseline_dir, inputs, window=window, stride=stride,
                         min_window=min_window, per_window=per_window, out=out, force=force)
    records = int(frame["start"].isna().sum())
    click.echo(f"{out}: {records} records, {len(frame) - records} window rows")


@cli.command("bench")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
@click.option("--preset", default="paper-1.4m", show_default=True,
              type=click.Choice(["tiny", "paper-1.4m", "paper-7m"]), help="Model size.")
@click.option("--window", default=16_384, show_default=True, type=click.IntRange(min=1),
              help="Embedding window (bases).")
@click.option("--stream", is_flag=True, help="Embed with the state carried along records.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Embedding windows per forward pass.")
@click.option("--embed-bases", default=None, type=click.IntRange(min=1),
              help="Bases to embed. Default: 2 windows per batch row on CPU, 64 on CUDA.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "bf16", "fp32"]),
              help="auto: bf16 autocast on CUDA, fp32 on CPU.")
@click.option("--tokenize-mb", default=32.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="FASTA size to tokenize (MB).")
@click.option("--train-seq-len", default=4096, show_default=True, type=click.IntRange(min=1),
              help="Tokens per training sequence.")
@click.option("--train-batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Sequences per training step.")
@click.option("--train-steps", default=5, show_default=True, type=click.IntRange(min=1),
              help="Timed training steps (after 2 warm-up steps).")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute blocks in the backward pass while training.")
@click.option("--stages", default="tokenize,embed,train", show_default=True,
              help="Comma-separated stages to run: tokenize, embed, forward, train, scan.")
@click.option("--scan-shapes", default=None,
              help="scan stage: comma-separated BATCHxCHANNELSxLENGTH, e.g. 1x1024x4096. "
                   "Default: 1x1024x4096,8x1024x4096,1x1024x1048576 on CUDA, 1x256x16384 on CPU.")
@click.option("-o", "--out", default="bench.json", show_default=True,
              type=click.Path(dir_okay=False), help="JSON report.")
def bench(stages, scan_shapes, out, **options) -> None:
    """Measure end-to-end throughput: tokenize MB/s, embed bases/s, train tokens/s, the
    selective scan's ms, memory."""
    from mambadna.bench import BenchConfig, format_table, parse_shapes, run_bench, write_report

    cfg = BenchConfig(stages=tuple(s.strip() for s in stages.split(",") if s.strip()),
                      scan_shapes=None if scan_shapes is None else parse_shapes(scan_shapes),
                      **options)
    report = run_bench(cfg)
    click.echo(format_table(report))
    click.echo(f"report: {write_report(report, out)}")


@cli.command()
@click.option("-o", "--out", "out_dir", default="demo_out", show_default=True,
              type=click.Path(file_okay=False), help="Folder for everything the demo writes.")
@click.option("--genome-length", default=300_000, show_default=True, type=click.IntRange(20_000),
              help="Bases per simulated genome (4 chromosomes).")
@click.option("--seq-len", default=256, show_default=True, type=click.IntRange(64),
              help="Window length for training and classification.")
@click.option("--pretrain-steps", default=100, show_default=True, type=click.IntRange(1),
              help="Optimizer steps of pretraining.")
@click.option("--finetune-steps", default=1000, show_default=True, type=click.IntRange(1),
              help="Optimizer steps of finetuning.")
@click.option("--species", default="human,orangutan", show_default=True,
              help="Comma-separated great apes to classify (human, chimpanzee, bonobo, gorilla, "
                   "orangutan); the close ones need many more steps.")
@click.option("--divergence-scale", default=1.0, show_default=True, type=click.FloatRange(0.0),
              help="Multiplies the simulated mutation rate (1 = realistic great apes).")
@click.option("--insertion-rate", default=1000.0, show_default=True,
              type=click.FloatRange(0.0),
              help="Lineage-specific insertions per Mb per Myr (realistic: 0.45).")
@click.option("--spectrum-bias", default=0.0, show_default=True,
              type=click.FloatRange(0.0), help="Lineage substitution signatures (0: none).")
@click.option("--finetune-from", default="scratch", show_default=True,
              type=click.Choice(["scratch", "pretrained"]),
              help="Train the classifier from random weights or from the pretrained model.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--force", is_flag=True, help="Replace an existing demo folder.")
def demo(out_dir, genome_length, seq_len, pretrain_steps, finetune_steps, species,
         divergence_scale, insertion_rate, spectrum_bias, finetune_from, seed, force) -> None:
    """Simulate great apes, pretrain, finetune, classify and embed on CPU; print a report."""
    from mambadna.demo import DemoConfig, run_demo

    config = DemoConfig(out_dir=out_dir, genome_length=genome_length, seq_len=seq_len,
                        pretrain_steps=pretrain_steps, finetune_steps=finetune_steps,
                        species=tuple(s.strip() for s in species.split(",") if s.strip()),
                        divergence_scale=divergence_scale, insertion_rate=insertion_rate,
                        spectrum_bias=spectrum_bias, finetune_from=finetune_from, seed=seed,
                        force=force)
    report = run_demo(config, log=lambda line: click.echo(line, err=True))
    click.echo(report.text())


def _train_command(kind: str) -> click.Command:
    """pretrain / finetune: one option per config field (help shared with the YAML keys)."""
    from mambadna.train.command import train_command  # torch-free; training imports lazily

    return train_command(kind)


cli.add_command(_train_command("pretrain"))
cli.add_command(_train_command("finetune"))


def _experiment_group() -> click.Group:
    from mambadna.experiments.command import experiment  # torch-free until a study runs

    return experiment


cli.add_command(_experiment_group())


def main() -> None:
    # A command runs one job: keep freed memory for reuse (the CPU model's large tensors
    # otherwise arrive as fresh pages every time; mambadna.allocator says why).
    retain_freed_memory()
    cli()
