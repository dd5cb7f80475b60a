"""The Mamba paper's context-length study: species accuracy and bits per base vs window length.

``context_curve(ContextCurveConfig(...))`` runs, on a species manifest with held-out chromosomes
(simulated great apes by default):

1. next-base pretraining once, on the first species' train chromosomes, with the paper's recipe
   (AdamW 0.9/0.95, weight decay 0.1, cosine schedule with 10 % warmup, lr 8e-3) and a
   sequence-length warmup from the shortest to the longest window (tokens per step constant);
2. bits per base of that model on the first species' held-out chromosome at every window length,
   over the same bases (``mambadna.pipelines.perplexity``);
3. at every window length: finetuning from the pretrained model with the same tokens per step
   (batch halves when the window doubles), then ``mambadna.pipelines.evaluate`` on the held-out
   chromosomes with the k-mer naive Bayes baseline scored on the same windows.

Writes ``curve.csv`` (one row per window length: the model's and the k-mer baseline's balanced
accuracy with 95 % intervals, accuracy, chance, majority baseline, windows), ``curve.png``,
``perplexity.csv``, ``perplexity.png``, ``report.md`` and ``experiment.json`` (the resolved
configuration), beside the run folders ``pretrain/``, ``finetune_<L>/`` and ``eval_<L>/``.
Steps are scaled down from the paper (which trains to convergence): the report says how many.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mambadna.atomic import atomic_file
from mambadna.errors import ConfigError
from mambadna.plots import figure, save

GREAT_APES = ("human", "chimpanzee", "bonobo", "gorilla", "orangutan")


@dataclass
class ContextCurveConfig:
    """What the context-length study runs; defaults: five simulated great apes, 2^10..2^20."""

    out_dir: str
    """Folder for every run, table and plot of the study."""
    manifest: str | None = None
    """Species manifest (path, label, split with train/val/test rows); None: simulate."""
    species: tuple[str, ...] = GREAT_APES
    """Species to simulate (when no manifest is given)."""
    genome_length: int = 16_000_000
    """Bases per simulated genome (4 chromosomes; the test one holds a tenth)."""
    insertion_rate: float = 0.45
    """Lineage-specific insertions per Mb per Myr of the simulation (0.45: realistic)."""
    spectrum_bias: float = 0.0
    """Lineage-specific substitution-spectrum bias of the simulation (0: none)."""
    lengths: tuple[int, ...] = tuple(2 ** e for e in range(10, 21, 2))
    """Window lengths to finetune and evaluate at."""
    preset: str = "paper-1.4m"
    """Model size (the paper's 1.4M-parameter DNA model)."""
    pretrain_seq_len: int | None = None
    """Window length pretraining warms up to (default: the longest of ``lengths``)."""
    pretrained: str | None = None
    """A pretrained model folder to start from instead of pretraining (e.g. an earlier
    study's ``pretrain/model``: studies can then be split over several runs)."""
    tokens_per_step: int = 2 ** 20
    """Bases per optimizer step at every length (a multiple of the longest window)."""
    pretrain_steps: int = 200
    """Optimizer steps of pretraining (the paper trains far longer)."""
    warmup_stage: int = 0
    """Steps of each sequence-length warmup stage (0: a tenth of pretrain_steps over the
    doublings)."""
    pretrain_lr: float = 8e-3
    """Peak learning rate of pretraining (the paper's Mamba DNA value)."""
    finetune_steps: int = 100
    """Optimizer steps of finetuning at each length."""
    finetune_lr: float = 1e-3
    """Peak learning rate of finetuning."""
    pooling: str = "mean"
    """Classifier pooling: mean over positions, or the last position (the paper's)."""
    finetune_from: str = "pretrained"
    """Start each classifier from the pretrained model (the paper's recipe) or from random
    weights ("scratch"; a short pretraining can be the worse start, see BENCHMARKS.md)."""
    k: int = 6
    """k of the k-mer naive Bayes baseline."""
    eval_stride_windows: int = 1
    """Evaluation windows overlap by this factor at the lengths where the test chromosome
    holds few windows (stride = window / factor once fewer than 16 windows per record)."""
    perplexity_bases: int | None = None
    """Bases of the held-out chromosome scored at every length (default: the largest multiple
    of the longest window it holds)."""
    devices: str = "auto"
    precision: str = "auto"
    num_workers: int = 2
    seed: int = 0
    force: bool = False
    extra_pretrain: dict = field(default_factory=dict)
    """Other PretrainConfig fields."""
    extra_finetune: dict = field(default_factory=dict)
    """Other FinetuneConfig fields."""

    def __post_init__(self) -> None:
        self.lengths = tuple(sorted(int(x) for x in self.lengths))
        if not self.lengths or self.lengths[0] < 16:
            raise ConfigError("lengths must be window lengths of at least 16 bases",
                              fix="e.g. --lengths 1024,4096,16384")
        if self.pretrain_seq_len is not None and self.tokens_per_step % self.pretrain_seq_len:
            raise ConfigError(f"tokens_per_step {self.tokens_per_step} is not a multiple of "
                              f"pretrain_seq_len {self.pretrain_seq_len}")
        if self.tokens_per_step % self.lengths[-1]:
            raise ConfigError(f"tokens_per_step {self.tokens_per_step} is not a multiple of the "
                              f"longest window {self.lengths[-1]}",
                              fix=f"use e.g. --tokens-per-step {self.lengths[-1]}")
        if self.pooling not in ("mean", "last"):
            raise ConfigError(f"pooling must be mean or last, got {self.pooling!r}")
        if self.finetune_from not in ("pretrained", "scratch"):
            raise ConfigError(f"finetune_from must be pretrained or scratch, got "
                              f"{self.finetune_from!r}")
        if self.eval_stride_windows < 1:
            raise ConfigError("eval_stride_windows must be at least 1")


def _manifest(config: ContextCurveConfig, out: Path, log) -> tuple[Path, list[str]]:
    """The species manifest (simulated if none is given) and its labels in manifest order."""
    from mambadna.manifests.labelled import read_manifest

    if config.manifest is None:
        from mambadna.simulate import simulate_species

        log(f"[context-curve] simulating {len(config.species)} species x "
            f"{config.genome_length:,} bases")
        sim = simulate_species(out / "genomes", species=list(config.species),
                               length=config.genome_length, n_chromosomes=4,
                               insertion_rate=config.insertion_rate,
                               spectrum_bias=config.spectrum_bias, seed=config.seed,
                               force=config.force)
        manifest = sim.manifest
    else:
        manifest = Path(config.manifest)
    rows = read_manifest(manifest)
    labels = list(dict.fromkeys(row.label for row in rows))
    for split in ("train", "test"):
        if not any(row.split == split for row in rows):
            raise ConfigError(f"the manifest has no {split} rows", path=manifest,
                              fix="give held-out chromosomes a split column: train, val, test")
    return manifest, labels


def _files(manifest: Path, label: str, split: str) -> list[str]:
    from mambadna.manifests.labelled import read_manifest

    return [str(r.path) for r in read_manifest(manifest) if r.label == label and r.split == split]


def _pretrain(config: ContextCurveConfig, manifest: Path, label: str, out: Path):
    from mambadna.train import PretrainConfig, pretrain

    shortest, longest = config.lengths[0], config.pretrain_seq_len or config.lengths[-1]
    doublings = max(1, round(math.log2(longest / shortest)))
    stage = config.warmup_stage or max(1, config.pretrain_steps // (10 * doublings))
    val = _files(manifest, label, "val")
    settings = dict(
        genomes=_files(manifest, label, "train"), val_genomes=val,
        out_dir=str(out / "pretrain"), preset=config.preset, seq_len=longest,
        tokens_per_step=config.tokens_per_step, max_steps=config.pretrain_steps,
        lr=config.pretrain_lr, warmup_start=shortest if shortest < longest else None,
        warmup_stage=stage if shortest < longest else 0.0, val_every=config.pretrain_steps,
        val_windows=8, devices=config.devices, precision=config.precision,
        num_workers=config.num_workers, seed=config.seed, force=config.force,
        log_every=max(1, config.pretrain_steps // 10))
    return pretrain(PretrainConfig(**{**settings, **config.extra_pretrain}))


def _finetune(config: ContextCurveConfig, manifest: Path, model_dir: Path, length: int,
              out: Path):
    from mambadna.train import FinetuneConfig, finetune

    start = (dict(from_model=str(model_dir)) if config.finetune_from == "pretrained"
             else dict(preset=config.preset))
    settings = dict(
        manifest=str(manifest), **start, out_dir=str(out / f"finetune_{length}"),
        seq_len=length, tokens_per_step=config.tokens_per_step, max_steps=config.finetune_steps,
        lr=config.finetune_lr, pooling=config.pooling, val_every=config.finetune_steps,
        val_windows=4, devices=config.devices, precision=config.precision,
        num_workers=config.num_workers, seed=config.seed, force=config.force,
        log_every=max(1, config.finetune_steps // 10))
    return finetune(FinetuneConfig(**{**settings, **config.extra_finetune}))


def _stride(config: ContextCurveConfig, manifest: Path, length: int) -> int:
    """Non-overlapping windows, unless the shortest test record holds fewer than 16."""
    from mambadna.io import read_records

    shortest = min(len(r.sequence) for row in _test_rows(manifest)
                   for r in read_records(row))
    if config.eval_stride_windows > 1 and shortest // length < 16:
        return max(1, length // config.eval_stride_windows)
    return length


def _test_rows(manifest: Path) -> list[str]:
    from mambadna.manifests.labelled import read_manifest

    return [str(r.path) for r in read_manifest(manifest) if r.split == "test"]


def _curve_row(length: int, metrics: dict, steps: int) -> dict:
    windows = metrics["windows"]
    kmer = metrics["baselines"]["kmer"]["windows"]
    low, high = windows["balanced_accuracy_interval"]
    k_low, k_high = kmer["balanced_accuracy_interval"]
    return dict(window=length, finetune_steps=steps, n_windows=windows["n"],
                balanced_accuracy=windows["balanced_accuracy"], ba_low=low, ba_high=high,
                accuracy=windows["accuracy"], kmer_balanced_accuracy=kmer["balanced_accuracy"],
                kmer_ba_low=k_low, kmer_ba_high=k_high, kmer_accuracy=kmer["accuracy"],
                chance=windows["chance"], majority_baseline=windows["majority_baseline"])


def _plot_curve(curve: pd.DataFrame, path: Path) -> None:
    fig = figure(6.4, 4.2)
    ax = fig.subplots()
    x = curve["window"].to_numpy()
    for prefix, name, marker in (("", "mambadna", "o"), ("kmer_", "k-mer naive Bayes", "s")):
        y = curve[f"{prefix}balanced_accuracy"].to_numpy()
        low, high = curve[f"{prefix}ba_low"].to_numpy(), curve[f"{prefix}ba_high"].to_numpy()
        ax.errorbar(x, y, yerr=[y - low, high - y], marker=marker, capsize=3, label=name)
    ax.plot(x, curve["chance"], "k--", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1)
    ax.set_xlabel("window (bases)")
    ax.set_ylabel("balanced accuracy, held-out chromosomes")
    ax.legend()
    save(fig, path)


def _plot_perplexity(table: pd.DataFrame, path: Path) -> None:
    fig = figure(6.4, 4.2)
    ax = fig.subplots()
    ax.plot(table["window"], table["bits_per_base"], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("window (bases)")
    ax.set_ylabel("bits per base, held-out chromosome")
    save(fig, path)


def _report(config: ContextCurveConfig, curve: pd.DataFrame, ppl: pd.DataFrame,
            seconds: dict) -> str:
    pretraining = (f"{config.pretrain_steps} steps" if config.pretrained is None
                   else f"from {config.pretrained}")
    lines = ["# Context-length study", "",
             f"Model {config.preset}, pooling {config.pooling}; pretraining {pretraining}, "
             f"finetuning from {config.finetune_from} {config.finetune_steps} steps per length, "
             f"{config.tokens_per_step:,} bases per step (scaled down from the paper).",
             "", "| window | model balanced acc. (95 % CI) | k-mer NB (95 % CI) | accuracy | "
             "chance | majority | windows |", "|---:|---|---|---:|---:|---:|---:|"]
    for r in curve.itertuples():
        lines.append(f"| {r.window:,} | {r.balanced_accuracy:.3f} ({r.ba_low:.3f}-"
                     f"{r.ba_high:.3f}) | {r.kmer_balanced_accuracy:.3f} ({r.kmer_ba_low:.3f}-"
                     f"{r.kmer_ba_high:.3f}) | {r.accuracy:.3f} | {r.chance:.3f} | "
                     f"{r.majority_baseline:.3f} | {r.n_windows} |")
    lines += ["", "Bits per base of the pretrained model on the held-out chromosome (same bases "
              "at every window):", "", "| window | bits per base | predictions |",
              "|---:|---:|---:|"]
    for r in ppl.itertuples():
        lines.append(f"| {r.window:,} | {r.bits_per_base:.4f} | {r.n_predicted:,} |")
    lines += ["", "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def context_curve(config: ContextCurveConfig, log=print) -> pd.DataFrame:
    """Run the study (module docstring) and return the curve table (also in curve.csv)."""
    from mambadna.pipelines.evaluate import evaluate
    from mambadna.pipelines.perplexity import bits_per_base

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = now - clock
        clock = now
        log(f"[context-curve] {step} done in {seconds[step]:.0f} s")

    manifest, labels = _manifest(config, out, log)
    _write(out / "experiment.json", json.dumps(
        {**asdict(config), "manifest": str(manifest), "labels": labels}, indent=2) + "\n")
    lap("data")
    if config.pretrained is None:
        pre_model = _pretrain(config, manifest, labels[0], out).model_dir
        lap("pretrain")
    else:
        pre_model = Path(config.pretrained)

    held_out = _files(manifest, labels[0], "test")
    bases = config.perplexity_bases
    if bases is None:
        from mambadna.io import read_records

        shortest = min(len(r.sequence) for path in held_out for r in read_records(path))
        bases = shortest // config.lengths[-1] * config.lengths[-1]
    ppl = pd.DataFrame([bits_per_base(pre_model, held_out, length, bases=bases).as_dict()
                        for length in config.lengths])
    _write(out / "perplexity.csv", ppl.to_csv(index=False))
    _plot_perplexity(ppl, out / "perplexity.png")
    lap("perplexity")

    rows = []
    for length in config.lengths:
        fine = _finetune(config, manifest, pre_model, length, out)
        result = evaluate(fine.model_dir, manifest, out / f"eval_{length}", split="test",
                          window=length, stride=_stride(config, manifest, length),
                          baseline="kmer", k=config.k, batch_size=max(1, 2 ** 17 // length),
                          force=config.force, progress=False, seed=config.seed)
        rows.append(_curve_row(length, result.metrics, config.finetune_steps))
        _write(out / "curve.csv", pd.DataFrame(rows).to_csv(index=False))  # partial results survive
        lap(f"length {length}")

    curve = pd.DataFrame(rows)
    _plot_curve(curve, out / "curve.png")
    _write(out / "report.md", _report(config, curve, ppl, seconds))
    return curve
