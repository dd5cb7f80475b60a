"""Training: next-base pretraining and sequence classification with Lightning.

    from mambadna.train import pretrain, finetune, PretrainConfig, FinetuneConfig
    run = pretrain(PretrainConfig(genomes=["genome.fa"], out_dir="runs/pre", preset="tiny",
                                  seq_len=1024, max_steps=2000))
    run = finetune(FinetuneConfig(manifest="splits/manifest.tsv", from_model="runs/pre/model",
                                  out_dir="runs/fine"))
    run.model_dir, run.metrics          # exported model, pandas DataFrame of metrics.csv

Several GPUs: ``devices=N`` (DDP; ``strategy="fsdp"`` shards the model). Several nodes with
SLURM: one task per GPU, the same command on every task, e.g. in an sbatch script with
``#SBATCH --nodes=2 --ntasks-per-node=4 --gpus-per-node=4``::

    srun mambadna pretrain --genome hg38.train.fa -o runs/hg38 --preset paper-7m \\
        --seq-len 1048576 --warmup-start 1024 --warmup-stage 500 --devices 4 --num-nodes 2

Lightning detects SLURM and sets up the process group; rank 0 prepares the run folder (which
must be on a file system every node sees) and the others wait for it. ``--resume`` continues
from ``RUN_DIR/checkpoints/last.ckpt`` (also written when a run is interrupted).

This package is imported lazily: ``mambadna.train.config`` and ``mambadna.train.command`` are
torch-free, so the CLI stays fast.
"""

from __future__ import annotations

from mambadna._modules import lazy_exports

_LAZY = {
    "PretrainConfig": "mambadna.train.config",
    "FinetuneConfig": "mambadna.train.config",
    "TrainConfig": "mambadna.train.config",
    "load_config": "mambadna.train.config",
    "pretrain": "mambadna.train.run",
    "finetune": "mambadna.train.run",
    "RunResult": "mambadna.train.run",
    "LanguageModelModule": "mambadna.train.modules",
    "ClassifierModule": "mambadna.train.modules",
    "SeqLenWarmup": "mambadna.train.callbacks",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
