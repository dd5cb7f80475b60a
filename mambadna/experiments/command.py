"""``mambadna experiment ...``: the click commands of the studies (thin shells over them)."""

from __future__ import annotations

import click


def _lengths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if not values:
        raise click.BadParameter("give at least one window length")
    return values


@click.group("experiment")
def experiment() -> None:
    """Reproducible studies: tables and plots from simulate/pretrain/finetune/evaluate."""


@experiment.command("context-curve")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the runs, curve.csv/png, perplexity.csv/png and report.md.")
@click.option("--manifest", default=None, type=click.Path(dir_okay=False),
              help="Species manifest with train/val/test rows (default: simulate great apes).")
@click.option("--species", default="human,chimpanzee,bonobo,gorilla,orangutan",
              show_default=True, help="Great apes to simulate (without --manifest).")
@click.option("--genome-length", default=16_000_000, show_default=True,
              type=click.IntRange(min=20_000), help="Bases per simulated genome.")
@click.option("--insertion-rate", default=0.45, show_default=True, type=click.FloatRange(0),
              help="Lineage-specific insertions per Mb per Myr (0.45: realistic).")
@click.option("--spectrum-bias", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Lineage-specific substitution-spectrum bias of the simulation.")
@click.option("--lengths", default="1024,4096,16384,65536,262144,1048576", show_default=True,
              help="Window lengths (comma-separated).")
@click.option("--preset", default="paper-1.4m", show_default=True,
              type=click.Choice(["tiny", "paper-1.4m", "paper-7m"]), help="Model size.")
@click.option("--pretrain-seq-len", default=None, type=click.IntRange(min=16),
              help="Window length pretraining warms up to (default: the longest of --lengths).")
@click.option("--perplexity-bases", default=None, type=click.IntRange(min=16),
              help="Bases of the held-out chromosome scored at every length (default: the "
                   "largest multiple of the longest window it holds).")
@click.option("--pretrained", default=None, type=click.Path(file_okay=False),
              help="Start from this pretrained model folder instead of pretraining.")
@click.option("--tokens-per-step", default=2 ** 20, show_default=True,
              type=click.IntRange(min=1), help="Bases per optimizer step at every length.")
@click.option("--pretrain-steps", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--finetune-steps", default=100, show_default=True, type=click.IntRange(min=1),
              help="Finetuning steps at each length.")
@click.option("--finetune-lr", default=1e-3, show_default=True, type=float)
@click.option("--pretrain-lr", default=8e-3, show_default=True, type=float)
@click.option("--pooling", default="mean", show_default=True,
              type=click.Choice(["mean", "last"]), help="Classifier pooling.")
@click.option("--finetune-from", default="pretrained", show_default=True,
              type=click.Choice(["pretrained", "scratch"]),
              help="Start each classifier from the pretrained model or from random weights.")
@click.option("--eval-overlap", "eval_stride_windows", default=1, show_default=True,
              type=click.IntRange(min=1),
              help="Evaluation windows overlap this many times where a test record holds "
                   "fewer than 16.")
@click.option("--devices", default="auto", show_default=True)
@click.option("--num-workers", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--force", is_flag=True, help="Replace earlier runs in --out-dir.")
def context_curve_command(lengths, species, **options) -> None:
    """Balanced accuracy (model and k-mer baseline) and bits per base vs window length."""
    from mambadna.experiments.context_curve import ContextCurveConfig, context_curve

    config = ContextCurveConfig(lengths=_lengths(lengths),
                                species=tuple(s.strip() for s in species.split(",") if s.strip()),
                                **options)
    curve = context_curve(config, log=lambda line: click.echo(line, err=True))
    click.echo(curve.to_string(index=False))
