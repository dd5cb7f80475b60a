"""The ``pretrain`` and ``finetune`` commands, their options generated from the config fields.

Each field of PretrainConfig / FinetuneConfig becomes an option with the field's help line, so
the CLI, the YAML file and the Python API share names and documentation. Options default to
"not given" so that only flags the user types override ``--config YAML``. Torch-free at import
time: the training code is imported when a command runs.
"""

from __future__ import annotations

from dataclasses import fields

import click

from mambadna.train.config import FinetuneConfig, PretrainConfig, TrainConfig, field_default

_DOC = {
    "pretrain": (PretrainConfig, "Pretrain a Mamba model on genomes (next-base prediction)."),
    "finetune": (FinetuneConfig, "Finetune a sequence classifier on labelled files (manifest "
                                 "TSV: path, label, split)."),
}


def _option(f) -> click.Option | None:
    meta = f.metadata
    if not meta.get("cli", True):
        return None
    names = [*meta.get("flag", "--" + f.name.replace("_", "-")).split("/"), f.name]
    kind = str(f.type).replace("| None", "").strip()
    default = field_default(f)
    shown = ", ".join(map(str, default)) if isinstance(default, list) else default
    help_text = meta["help"] + (f"  [default: {shown}]" if shown not in (None, "", []) else "")
    if kind == "bool":
        return click.Option(names, is_flag=True, default=None, help=meta["help"])
    if meta.get("multiple"):
        return click.Option(names, multiple=True, type=click.Path(dir_okay=False),
                            help=meta["help"])
    if meta.get("choices"):
        ptype = click.Choice(meta["choices"])
    else:
        ptype = {"int": click.INT, "float": click.FLOAT}.get(kind, click.STRING)
    if f.name in ("store", "val_store", "from_model", "out_dir"):
        ptype = click.Path(file_okay=False)
    elif f.name == "manifest":
        ptype = click.Path(dir_okay=False)
    return click.Option(names, type=ptype, default=None, help=help_text)


def _summary(result) -> str:
    lines = [f"run folder: {result.out_dir}", f"model: {result.model_dir}"]
    if result.best_model_dir is not None:
        lines.append(f"best model: {result.best_model_dir}")
    if result.final:
        lines.append("final: " + ", ".join(f"{k} {v:.4g}" for k, v in result.final.items()))
    return "\n".join(lines)


def train_command(kind: str) -> click.Command:
    """The click command ``pretrain`` or ``finetune``."""
    cls, doc = _DOC[kind]

    def callback(config_file, **flags) -> None:
        from mambadna.train.config import load_config

        overrides = {k: v for k, v in flags.items() if v is not None and v != ()}
        config: TrainConfig = load_config(cls, config_file, overrides)
        if kind == "pretrain":
            from mambadna.train.run import pretrain as run
        else:
            from mambadna.train.run import finetune as run
        result = run(config)
        if result.is_global_zero:
            click.echo(_summary(result))

    params = [click.Option(["--config", "config_file"], type=click.Path(dir_okay=False),
                           help="YAML file of options (keys as below, with underscores); "
                                "flags override it.")]
    params += [opt for opt in map(_option, fields(cls)) if opt is not None]
    epilog = ("Multi-GPU: --devices N (DDP); several nodes: --num-nodes M, launched by SLURM "
              "with one task per GPU, e.g. `srun mambadna " + kind + " ... --devices 4 "
              "--num-nodes 2` inside an sbatch script with --ntasks-per-node=4.")
    return click.Command(kind, callback=callback, params=params, help=doc, epilog=epilog,
                         context_settings={"max_content_width": 100})
