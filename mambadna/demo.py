"""The embedded demo: simulate great apes -> pretrain -> finetune -> evaluate -> embed, on CPU.

``mambadna demo -o DIR`` (and ``make demo``) runs the whole package end to end in a few minutes
on a laptop CPU and prints an honest report: balanced accuracy on held-out chromosomes next to
chance, the majority baseline and a k-mer naive Bayes scored on the same windows, per-species
recall, the confusion matrix, the files written and the time each step took. Every step is one
call of the public library; nothing here is specific to the demo except the sizes.

Layout of DIR: ``genomes/`` (simulated FASTA, manifest.tsv, simulation.json), ``pretrain/`` and
``finetune/`` (run folders with ``model/``), ``evaluation/`` (mambadna evaluate's folder:
metrics, predictions, plots), ``predictions.tsv`` (its predictions: one row per held-out
chromosome and per window, with true and predicted labels), ``report.json`` (its metrics plus
the demo's times), ``embeddings.parquet`` (one row per window), ``pretrain_curves.png`` and
``finetune_curves.png`` (training curves, mambadna.plots), ``report.md`` (which shows them and
the evaluation's confusion matrices and model-vs-baselines plot).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mambadna.atomic import atomic_file
from mambadna.errors import ConfigError, OutputExistsError


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults take a few minutes on a 2-core CPU."""

    out_dir: str = "demo_out"
    """Folder for everything the demo writes."""
    species: tuple[str, ...] = ("human", "orangutan")
    """Species of the simulated great-ape tree to classify. Human vs orangutan (~15 Myr apart)
    is what a CPU learns in a few minutes (0.975 balanced accuracy on held-out windows, k-mer
    baseline 0.953, 2026-12-02); with all five great apes the close pairs
    (human-chimpanzee-bonobo) need far more training."""
    genome_length: int = 300_000
    """Bases per simulated genome (4 chromosomes: 2 train, 1 validation, 1 test)."""
    divergence_scale: float = 1.0
    """Multiplies the mutation rate of the simulation (1 = realistic, hard)."""
    insertion_rate: float = 1000.0
    """Lineage-specific transposon insertions per Mb per Myr (the simulator's realistic value
    is 0.45): at this rate most windows hold a copy of their lineage's subfamily, the signal
    that carries across chromosomes (mambadna.simulate.lineage)."""
    spectrum_bias: float = 0.0
    """Lineage-specific substitution-spectrum bias of the simulation (0: none)."""
    k: int = 6
    """k of the k-mer naive Bayes baseline the demo reports next to the model."""
    seq_len: int = 256
    """Window length for pretraining, finetuning and classification."""
    d_model: int = 32
    """Width of the demo's model (2 blocks of 32: ~17k parameters, 22k bases/s of training on
    a 2-core CPU, 3.5x the "tiny" preset's speed, so finetuning gets enough steps)."""
    n_layer: int = 2
    """Mamba blocks of the demo's model."""
    pretrain_steps: int = 100
    """Optimizer steps of next-base pretraining (on the first species' genome)."""
    finetune_steps: int = 1000
    """Optimizer steps of species finetuning."""
    finetune_lr: float = 3e-3
    """Peak learning rate of finetuning."""
    finetune_from: str = "scratch"
    """Start the classifier from random weights ("scratch") or from the pretrained model
    ("pretrained"). A CPU's 100 pretraining steps learn little beyond base composition and grow
    the tied embedding ~7x, so the mean-pooled vector is mostly composition: started from them
    the classifier reached 0.90 balanced accuracy (k-mer baseline 0.95), from random weights
    0.97 (human vs orangutan, 256 bases, 1000 steps, 2026-12-02)."""
    batch_size: int = 16
    """Windows per step."""
    seed: int = 0
    """Seed of the simulation, the weights and the data order."""
    force: bool = False
    """Replace an existing demo folder."""

    def __post_init__(self) -> None:
        if self.finetune_from not in ("scratch", "pretrained"):
            raise ConfigError(f"finetune_from must be 'scratch' or 'pretrained', got "
                              f"{self.finetune_from!r}")
        if len(set(self.species)) < 2 or len(set(self.species)) != len(self.species):
            raise ConfigError(f"the demo needs at least two different species, got "
                              f"{', '.join(self.species) or 'none'}",
                              fix="e.g. --species human,orangutan")


@dataclass
class DemoReport:
    """What the demo measured and wrote; ``metrics`` is the evaluation's metrics.json."""

    out_dir: Path
    reference: str
    """The species pretrained on (the first); divergences are reported against it."""
    simulation: dict
    """The simulation's settings that carry the species signal (see mambadna.simulate)."""
    metrics: dict
    """``records`` / ``windows`` metrics and ``baselines.kmer`` (mambadna.pipelines.metrics)."""
    record_calls: pd.DataFrame
    """One row per held-out chromosome: true and predicted species, probability."""
    pretrain_loss: dict[str, float]
    finetune_from: str
    """"scratch" or "pretrained" (DemoConfig.finetune_from)."""
    divergence: dict[str, float]
    files: list[Path]
    seconds: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    """Caption -> PNG file (training curves, the evaluation's plots), shown in report.md."""

    @property
    def balanced_accuracy(self) -> float:
        return self.metrics["windows"]["balanced_accuracy"]

    def recall(self) -> dict[str, float]:
        """Per species: share of its held-out windows called that species."""
        return {label: c["recall"] for label, c in self.metrics["windows"]["per_class"].items()
                if c["n"]}

    def text(self) -> str:
        """The report as Markdown (printed by the CLI and written to report.md)."""
        w = self.metrics["windows"]
        kmer = self.metrics["baselines"]["kmer"]["windows"]
        low, high = w["balanced_accuracy_interval"]
        k_low, k_high = kmer["balanced_accuracy_interval"]
        lines = ["# mambadna demo report", ""]
        lines.append(f"**Balanced accuracy {w['balanced_accuracy']:.1%}** (95% CI {low:.1%}-"
                     f"{high:.1%}) on {w['n']} windows of the held-out chromosomes; chance "
                     f"{w['chance']:.1%}, majority baseline {w['majority_baseline']:.1%}, k-mer "
                     f"naive Bayes {kmer['balanced_accuracy']:.1%} ({k_low:.1%}-{k_high:.1%}).")
        gap = w["balanced_accuracy"] - kmer["balanced_accuracy"]
        if low > k_high:
            verdict = f"The model beats k-mer counting by {gap * 100:.1f} points."
        elif high < k_low:
            verdict = (f"The model trails k-mer counting by {-gap * 100:.1f} points: a finding "
                       "to fix, not a result.")
        else:
            verdict = (f"Model and k-mer counting are level here ({gap * 100:+.1f} points, "
                       "intervals overlap).")
        lines += ["", verdict, "", "| species | windows | recall | k-mer recall | precision |",
                  "|---|---:|---:|---:|---:|"]
        for label, c in w["per_class"].items():
            precision = "-" if c["precision"] is None else f"{c['precision']:.1%}"
            lines.append(f"| {label} | {c['n']} | {c['recall']:.1%} | "
                         f"{kmer['per_class'][label]['recall']:.1%} | {precision} |")
        labels, matrix = w["confusion"]["labels"], w["confusion"]["matrix"]
        lines += ["", "Confusion matrix (rows: true, columns: predicted; windows):", "",
                  "| true \\ predicted | " + " | ".join(labels) + " |",
                  "|---|" + "---:|" * len(labels)]
        lines += [f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |"
                  for label, row in zip(labels, matrix)]
        lines += ["", "Whole held-out chromosome calls:", ""]
        for row in self.record_calls.itertuples():
            lines.append(f"- {row.true_label} {row.record_id}: predicted {row.predicted_label} "
                         f"(p = {row.probability:.2f})")
        sim = ", ".join(f"{k} {v}" for k, v in self.simulation.items())
        lines += ["", f"Simulation ({sim}); divergence: " + ", ".join(
            f"{pair} {value:.2%}" for pair, value in self.divergence.items()
            if pair.startswith(f"{self.reference}-")) + ".",
            "Pretraining (next base): " + ", ".join(
                f"{key} {value:.3f}" for key, value in self.pretrain_loss.items()) + ".",
            "The classifier was trained from " + (
                "the pretrained model." if self.finetune_from == "pretrained" else
                "random weights: 100 CPU pretraining steps learn little beyond base composition "
                "and were a worse start (0.90 vs 0.97 balanced accuracy, measured 2026-12-02; "
                "--finetune-from pretrained to compare).")]
        if self.figures:
            lines += ["", "Figures:", ""] + [
                f"![{caption}]({_relative(path, self.out_dir)})"
                for caption, path in self.figures.items()]
        lines += ["", "Files written:", ""] + [f"- {p}" for p in self.files]
        lines += ["", "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
                  + f" (total {sum(self.seconds.values()):.0f} s)"]
        return "\n".join(lines) + "\n"


def _prepare_out(config: DemoConfig) -> Path:
    out = Path(config.out_dir)
    if out.exists() and any(out.iterdir()):
        if not config.force:
            raise OutputExistsError(f"demo folder {out} already exists and is not empty",
                                    path=out, fix="pass --force to replace it, or use -o NEW_DIR")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_demo(config: DemoConfig | None = None, log=print) -> DemoReport:
    """Run every step of the demo and return its report (also written to report.md)."""
    from mambadna.pipelines import embed
    from mambadna.pipelines.evaluate import evaluate
    from mambadna.plots import plot_run
    from mambadna.simulate import simulate_species
    from mambadna.train import FinetuneConfig, PretrainConfig, finetune, pretrain

    config = config or DemoConfig()
    out = _prepare_out(config)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = now - clock
        clock = now
        log(f"[demo] {step} done in {seconds[step]:.0f} s")

    log(f"[demo] simulating {len(config.species)} species x {config.genome_length:,} bases")
    sim = simulate_species(out / "genomes", species=list(config.species),
                           length=config.genome_length, n_chromosomes=4,
                           divergence_scale=config.divergence_scale,
                           insertion_rate=config.insertion_rate,
                           spectrum_bias=config.spectrum_bias, seed=config.seed)
    lap("simulate")

    common = dict(seq_len=config.seq_len, batch_size=config.batch_size, seed=config.seed,
                  num_workers=0, val_every=50)
    reference = config.species[0]
    log(f"[demo] pretraining a small model on the {reference} genome "
        f"({config.pretrain_steps} steps)")
    split = sim.split_fasta[reference]
    pre = pretrain(PretrainConfig(genomes=[str(split["train"])],
                                  val_genomes=[str(split["val"])], out_dir=str(out / "pretrain"),
                                  preset="tiny", max_steps=config.pretrain_steps,
                                  model=dict(d_model=config.d_model, n_layer=config.n_layer),
                                  log_every=_log_every(config.pretrain_steps), **common))
    lap("pretrain")

    log(f"[demo] finetuning the species classifier ({config.finetune_steps} steps, from "
        f"{'the pretrained model' if config.finetune_from == 'pretrained' else 'random weights'})")
    start = (dict(from_model=str(pre.model_dir)) if config.finetune_from == "pretrained" else
             dict(preset="tiny", model=dict(d_model=config.d_model, n_layer=config.n_layer)))
    fine = finetune(FinetuneConfig(manifest=str(sim.manifest), out_dir=str(out / "finetune"),
                                   max_steps=config.finetune_steps, lr=config.finetune_lr,
                                   pooling="mean", log_every=_log_every(config.finetune_steps),
                                   **start, **common))
    lap("finetune")

    log("[demo] evaluating on the held-out chromosomes (and the k-mer baseline)")
    evaluation = evaluate(fine.model_dir, sim.manifest, out / "evaluation", split="test",
                          window=config.seq_len, baseline="kmer", k=config.k, batch_size=16,
                          progress=False, seed=config.seed)
    # The evaluation's tables beside report.md: every window and record with its true and
    # predicted label, and the metrics (report.json has metrics.json's keys).
    with atomic_file(out / "predictions.tsv") as tmp:
        shutil.copyfile(evaluation.files["predictions.tsv"], tmp)
    metrics = evaluation.metrics
    lap("evaluate")

    test_files = [sim.split_fasta[name]["test"] for name in config.species]
    log("[demo] embedding the held-out chromosomes")
    embed(fine.model_dir, [str(p) for p in test_files], out / "embeddings.parquet",
          window=config.seq_len, batch_size=16, progress=False)
    lap("embed")

    figures = {"pretraining: loss and bits per base":
               plot_run(pre.out_dir, out / "pretrain_curves.png", panels=("loss", "bits per base")),
               "finetuning: loss and accuracy":
               plot_run(fine.out_dir, out / "finetune_curves.png", panels=("loss", "accuracy")),
               "held-out windows and records: confusion matrices":
               evaluation.files["confusion.png"],
               "balanced accuracy: model, k-mer naive Bayes, majority class, chance":
               evaluation.files["comparison.png"]}
    table = evaluation.predictions
    records = table[table["level"] == "records"]
    report = DemoReport(
        out_dir=out, reference=reference,
        simulation={"insertion_rate": config.insertion_rate,
                    "spectrum_bias": config.spectrum_bias,
                    "divergence_scale": config.divergence_scale},
        metrics=metrics,
        record_calls=records[["record_id", "true_label", "predicted_label", "probability"]],
        pretrain_loss={k: v for k, v in pre.final.items() if "loss" in k or "bpb" in k},
        finetune_from=config.finetune_from,
        divergence=sim.divergence,
        files=[out / "genomes" / "manifest.tsv", pre.model_dir, fine.model_dir,
               out / "evaluation", out / "predictions.tsv", out / "report.json",
               out / "embeddings.parquet", out / "pretrain_curves.png",
               out / "finetune_curves.png", out / "report.md"],
        seconds=seconds, figures=figures)
    _write_text(out / "report.json", json.dumps(
        {**metrics, "demo": {"seconds": seconds, "divergence": sim.divergence,
                             "simulation": report.simulation}}, indent=2) + "\n")
    _write_text(out / "report.md", report.text())
    return report


def _log_every(steps: int) -> int:
    """A metrics row every 25 steps, but at least ~10 rows (curves of short runs too)."""
    return max(1, min(25, steps // 10))


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return str(path)


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
