"""The embedded demo: simulate great apes -> pretrain -> finetune -> classify -> embed, on CPU.

``mambadna demo -o DIR`` (and ``make demo``) runs the whole package end to end in a few minutes
on a laptop CPU and prints an honest report: per-species accuracy on held-out chromosomes
against chance, the confusion matrix, the files written and the time each step took. Every step
is one call of the public library; nothing here is specific to the demo except the sizes.

Layout of DIR: ``genomes/`` (simulated FASTA, manifest.tsv, simulation.json), ``pretrain/`` and
``finetune/`` (run folders with ``model/``), ``predictions.tsv`` (per held-out chromosome, plus
one row per window), ``embeddings.parquet`` (one row per window), ``report.md``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mambadna.errors import ConfigError, OutputExistsError


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults take a few minutes on a 2-core CPU."""

    out_dir: str = "demo_out"
    """Folder for everything the demo writes."""
    species: tuple[str, ...] = ("human", "orangutan")
    """Species of the simulated great-ape tree to classify. Human vs orangutan (~15 Myr apart)
    is what a CPU learns in a few minutes (90 % of held-out windows, 2026-11-29); all five
    great apes reach 36 % (chance 20 %) with the same 1000 steps: the close pairs
    (human-chimpanzee-bonobo) need far more training."""
    genome_length: int = 300_000
    """Bases per simulated genome (4 chromosomes: 2 train, 1 validation, 1 test)."""
    divergence_scale: float = 1.0
    """Multiplies the mutation rate of the simulation (1 = realistic, hard)."""
    insertion_rate: float = 1000.0
    """Lineage-specific transposon insertions per Mb per Myr (the simulator's realistic value
    is 0.45). A lineage's copies differ from its relatives' by ~4 % of their sites, the only
    signal a short window keeps across chromosomes; at this rate most windows hold several.
    At 300 the classifier sat at chance for hundreds of steps and learned or not depending
    on the run (80 % once, 56 % once); at 20 it stayed at chance."""
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
    batch_size: int = 16
    """Windows per step."""
    seed: int = 0
    """Seed of the simulation, the weights and the data order."""
    force: bool = False
    """Replace an existing demo folder."""

    def __post_init__(self) -> None:
        if len(set(self.species)) < 2 or len(set(self.species)) != len(self.species):
            raise ConfigError(f"the demo needs at least two different species, got "
                              f"{', '.join(self.species) or 'none'}",
                              fix="e.g. --species human,orangutan")


@dataclass
class DemoReport:
    """What the demo measured and wrote."""

    out_dir: Path
    reference: str
    """The species pretrained on (the first); divergences are reported against it."""
    insertion_factor: float
    """Simulated lineage insertion rate over the realistic one."""
    accuracy: dict[str, float]
    """Per species: share of held-out windows predicted as that species."""
    overall_accuracy: float
    chance: float
    confusion: pd.DataFrame
    """Rows: true species; columns: predicted species; window counts."""
    record_calls: pd.DataFrame
    """One row per held-out chromosome: true and predicted species, probability."""
    pretrain_loss: dict[str, float]
    divergence: dict[str, float]
    files: list[Path]
    seconds: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        """The report as Markdown (printed by the CLI and written to report.md)."""
        lines = ["# mambadna demo report", ""]
        lines.append(f"Simulated (lineage insertions at {self.insertion_factor:.0f}x the realistic "
                     "rate) divergence: " + ", ".join(
            f"{pair} {value:.2%}" for pair, value in self.divergence.items()
            if pair.startswith(f"{self.reference}-")))
        lines.append("Pretraining (next base): " + ", ".join(
            f"{key} {value:.3f}" for key, value in self.pretrain_loss.items()))
        lines += ["", f"Held-out chromosomes, windows of the test split: accuracy "
                  f"{self.overall_accuracy:.1%} (chance {self.chance:.1%})", "",
                  "| species | windows | accuracy | vs chance |", "|---|---:|---:|---:|"]
        for name, acc in self.accuracy.items():
            n = int(self.confusion.loc[name].sum())
            lines.append(f"| {name} | {n} | {acc:.1%} | {acc / self.chance:.2f}x |")
        lines += ["", "Confusion matrix (rows: true, columns: predicted; windows):", "",
                  "| true \\ predicted | " + " | ".join(self.confusion.columns) + " |",
                  "|---|" + "---:|" * len(self.confusion.columns)]
        for name, row in self.confusion.iterrows():
            lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
        lines += ["", "Whole held-out chromosome calls:", ""]
        for row in self.record_calls.itertuples():
            lines.append(f"- {row.true_label} {row.record_id}: predicted {row.predicted_label} "
                         f"(p = {row.probability:.2f})")
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


def _window_accuracy(windows: pd.DataFrame, species: list[str]):
    """Accuracy per true species and the confusion matrix from per-window predictions."""
    confusion = pd.crosstab(windows["true_label"], windows["predicted_label"])
    confusion = confusion.reindex(index=species, columns=species, fill_value=0)
    per_species = {name: float(confusion.loc[name, name] / max(confusion.loc[name].sum(), 1))
                   for name in species}
    overall = float(np.trace(confusion.to_numpy()) / max(confusion.to_numpy().sum(), 1))
    return per_species, overall, confusion


def run_demo(config: DemoConfig | None = None, log=print) -> DemoReport:
    """Run every step of the demo and return its report (also written to report.md)."""
    from mambadna.pipelines import classify, embed
    from mambadna.simulate import SimulationConfig, simulate_species
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
                           insertion_rate=config.insertion_rate, seed=config.seed)
    lap("simulate")

    common = dict(seq_len=config.seq_len, batch_size=config.batch_size, seed=config.seed,
                  num_workers=0, val_every=50, log_every=25)
    reference = config.species[0]
    log(f"[demo] pretraining a small model on the {reference} genome "
        f"({config.pretrain_steps} steps)")
    split = sim.split_fasta[reference]
    pre = pretrain(PretrainConfig(genomes=[str(split["train"])],
                                  val_genomes=[str(split["val"])], out_dir=str(out / "pretrain"),
                                  preset="tiny", max_steps=config.pretrain_steps,
                                  model=dict(d_model=config.d_model, n_layer=config.n_layer),
                                  **common))
    lap("pretrain")

    log(f"[demo] finetuning the species classifier ({config.finetune_steps} steps)")
    fine = finetune(FinetuneConfig(manifest=str(sim.manifest), from_model=str(pre.model_dir),
                                   out_dir=str(out / "finetune"),
                                   max_steps=config.finetune_steps, lr=config.finetune_lr,
                                   pooling="mean", **common))
    lap("finetune")

    test_files = [sim.split_fasta[name]["test"] for name in config.species]
    log("[demo] classifying the held-out chromosomes")
    # One call per species file: the true label of every row is then that file's species.
    tables = [classify(fine.model_dir, [str(path)], window=config.seq_len, per_window=True,
                       batch_size=16, progress=False).assign(true_label=name)
              for name, path in zip(config.species, test_files)]
    table = pd.concat(tables, ignore_index=True)
    _write_tsv(table, out / "predictions.tsv")
    windows = table[table["start"].notna()]
    records = table[table["start"].isna()]
    accuracy, overall, confusion = _window_accuracy(windows, list(config.species))
    lap("classify")

    log("[demo] embedding the held-out chromosomes")
    embed(fine.model_dir, [str(p) for p in test_files], out / "embeddings.parquet",
          window=config.seq_len, batch_size=16, progress=False)
    lap("embed")

    report = DemoReport(
        out_dir=out, reference=reference,
        insertion_factor=config.insertion_rate / SimulationConfig.insertion_rate,
        accuracy=accuracy, overall_accuracy=overall,
        chance=1.0 / len(config.species), confusion=confusion,
        record_calls=records[["record_id", "true_label", "predicted_label", "probability"]],
        pretrain_loss={k: v for k, v in pre.final.items() if "loss" in k or "bits" in k},
        divergence=sim.divergence,
        files=[out / "genomes" / "manifest.tsv", pre.model_dir, fine.model_dir,
               out / "predictions.tsv", out / "embeddings.parquet", out / "report.md"],
        seconds=seconds)
    (out / "report.md").write_text(report.text())
    return report


def _write_tsv(table: pd.DataFrame, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, sep="\t", index=False)
    tmp.replace(path)
