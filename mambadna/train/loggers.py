"""What a training run tells: its metric loggers (CSV, optionally TensorBoard beside it), one
step numbering, and Lightning's own chatter kept out of the way unless ``--verbose``.

One step numbering: step k is "after k optimizer steps" everywhere. The log lines say
``step k/N`` and ``validation at step k``, checkpoints record ``global_step`` k
(``best-step=k.ckpt``), and so the metrics rows say k too. Lightning's loggers receive the
number of optimizer steps done *before* the batch being logged (0 for the first step, and a
validation after 3 steps is logged at 2); the loggers here add the one step that was just
done, so a metrics row, a log line and a checkpoint of the same moment carry the same number.

Quiet by default: Lightning prints tips (LitLogger, litmodels), hardware lines ("GPU available:
..."), its own deprecation notices and "possible user" suggestions on every run; they are
hidden unless ``verbose`` (``--verbose``), and so is the warning that a resumed run's checkpoint
folder is not empty (it holds last.ckpt by design). Other warnings and errors still show.
mambadna's own lines (progress lines, warmup stages, interrupt saves) go to the
``mambadna.train`` logger on rank 0 and always show.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from mambadna.errors import ConfigError

LOGGERS = ("csv", "tensorboard")
"""--logger choices: csv (RUN_DIR/logs/version_N/metrics.csv, merged into RUN_DIR/metrics.csv)
or tensorboard (the same CSV, plus TensorBoard event files in RUN_DIR/tensorboard/)."""

_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
_HIDDEN_WARNINGS = (DeprecationWarning, FutureWarning, PossibleUserWarning)

log = logging.getLogger("mambadna.train")


@rank_zero_only
def info(message: str) -> None:
    """A line of mambadna's own training output (rank 0 only), shown whatever ``verbose``."""
    _ensure_handler()
    log.info(message)


def _ensure_handler() -> None:
    """Print mambadna.train's lines on stderr unless the application configured logging (then
    they go to its handlers, at INFO unless it set a level for this logger)."""
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False


class _StepsDone:
    """Logger mixin: log at "optimizer steps done" (see the module docstring)."""

    def log_metrics(self, metrics, step: int | None = None) -> None:
        super().log_metrics(metrics, None if step is None else step + 1)


class StepsCSVLogger(_StepsDone, CSVLogger):
    """Lightning's CSVLogger, steps counted as optimizer steps done."""


class StepsTensorBoardLogger(_StepsDone, TensorBoardLogger):
    """Lightning's TensorBoardLogger, steps counted as optimizer steps done."""


def check_logger(kind: str) -> None:
    """ConfigError unless ``kind`` is a --logger choice whose package is installed."""
    if kind not in LOGGERS:
        raise ConfigError(f"--logger is {kind!r}, expected one of {', '.join(LOGGERS)}")
    if kind == "tensorboard" and not any(map(_installed, ("tensorboard", "tensorboardX"))):
        raise ConfigError("--logger tensorboard needs the tensorboard package, which is not "
                          "installed", fix="pip install 'mambadna[tensorboard]' (or use "
                                           "--logger csv)")


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def make_loggers(kind: str, run_dir: Path, version: int) -> list[Logger]:
    """The run's loggers for attempt ``version``: always the CSV one (RUN_DIR/metrics.csv is
    merged from it), and TensorBoard's beside it for ``kind == "tensorboard"``."""
    check_logger(kind)
    loggers: list[Logger] = [StepsCSVLogger(run_dir, name="logs", version=version)]
    if kind == "tensorboard":
        loggers.append(StepsTensorBoardLogger(run_dir, name="tensorboard", version=version,
                                              default_hp_metric=False))
    return loggers


@contextlib.contextmanager
def lightning_output(verbose: bool) -> Iterator[None]:
    """Inside the block, Lightning's info lines and its deprecation / "possible user" warnings
    are hidden unless ``verbose``; restored afterwards."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for category in _HIDDEN_WARNINGS:
            warnings.filterwarnings("ignore", category=category,
                                    module=r"(lightning|lightning_utilities|torch)(\.|$)")
        # --resume reuses RUN_DIR/checkpoints on purpose (last.ckpt is in it)
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not "
                                                  r"empty")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
