"""The run folder: layout, fresh/resume/force rules, multi-process start-up, metrics merge.

RUN_DIR/
    config.yaml          the resolved configuration (fields + a ``resolved`` record)
    store/, val_store/   token stores of the --genome / --val-genome files (not with --store)
    checkpoints/         Lightning checkpoints: last.ckpt (resume), best-step=N.ckpt
    logs/version_N/      one CSV log per attempt (a resume starts a new attempt)
    metrics.csv          all attempts merged (rows past an attempt's restart point dropped)
    model/, model_best/  exported models (save_pretrained)
    confusion_matrix.csv classification only: the latest validation's confusion matrix

Only the leader process (global rank 0) writes. In a multi-process launch (DDP, SLURM ``srun``)
the others wait until the leader has prepared the folder for *this* launch (``.prepared`` holds
the launch id) and then read what it wrote; this needs a file system shared by all nodes.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from mambadna.atomic import atomic_file
from mambadna.errors import ConfigError, OutputExistsError

PREPARED = ".prepared"
WAIT_SECONDS = 4 * 3600  # tokenizing a large genome on the leader can take a while


def is_leader() -> bool:
    """Whether this process is global rank 0, from the variables launchers set (Lightning's
    DDP launcher: LOCAL_RANK/NODE_RANK; torchrun: RANK; SLURM srun: SLURM_PROCID)."""
    env = os.environ
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        if int(env.get(name, "0") or 0) != 0:
            return False
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and int(env.get("SLURM_PROCID", "0")) != 0:
        return False
    return True


def launch_id() -> str:
    """An id shared by every process of this launch (inherited by DDP child processes)."""
    env = os.environ
    if "MAMBADNA_RUN_ID" not in env:
        if "SLURM_JOB_ID" in env:
            env["MAMBADNA_RUN_ID"] = (f"slurm-{env['SLURM_JOB_ID']}."
                                      f"{env.get('SLURM_STEP_ID', '0')}-"
                                      f"{env.get('SLURM_RESTART_COUNT', '0')}")
        elif "TORCHELASTIC_RUN_ID" in env:
            env["MAMBADNA_RUN_ID"] = "torchrun-" + env["TORCHELASTIC_RUN_ID"]
        else:
            env["MAMBADNA_RUN_ID"] = uuid.uuid4().hex
    return env["MAMBADNA_RUN_ID"]


def _holds_files(folder: Path) -> bool:
    """Whether anything but empty folders is inside (workflow managers pre-create folders)."""
    return any(not p.is_dir() for p in folder.rglob("*"))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (mambadna.atomic)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


class RunFolder:
    """Paths of a run folder and the rules for starting, resuming or replacing a run."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.store = self.path / "store"
        self.checkpoints = self.path / "checkpoints"
        self.last_checkpoint = self.checkpoints / "last.ckpt"
        self.logs = self.path / "logs"
        self.metrics = self.path / "metrics.csv"
        self.model = self.path / "model"
        self.model_best = self.path / "model_best"
        self.created = False

    def check(self, resume: bool, force: bool) -> None:
        """Errors for --resume without a checkpoint and for an existing run without --force."""
        if resume:
            if not self.last_checkpoint.is_file():
                raise ConfigError("--resume: no checkpoint to continue from",
                                  path=self.last_checkpoint,
                                  fix="run without --resume to start this run")
            return
        if self.path.exists() and (not self.path.is_dir() or _holds_files(self.path)):
            if not force:
                raise OutputExistsError("run folder exists and is not empty", path=self.path,
                                        fix="pass --resume to continue it, --force to replace "
                                            "it, or choose another -o")
            if not self.path.is_dir() or not self.config.is_file():
                raise OutputExistsError("exists and is not a run folder (no config.yaml); "
                                        "--force only replaces run folders", path=self.path,
                                        fix="choose another -o")

    def prepare(self, resume: bool, force: bool) -> None:
        """Leader only: check, then clear (force) or create the folder."""
        self.check(resume, force)
        (self.path / PREPARED).unlink(missing_ok=True)
        if not resume and self.path.is_dir() and _holds_files(self.path):
            shutil.rmtree(self.path)  # check() made sure this is a run folder and force is set
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)

    def discard_if_created(self) -> None:
        """Remove a folder this run created, after a failure before training started."""
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)

    def mark_prepared(self) -> None:
        write_atomic(self.path / PREPARED, launch_id() + "\n")

    def wait_prepared(self, timeout: float = WAIT_SECONDS) -> None:
        """Non-leaders: block until the leader has prepared the folder for this launch."""
        wanted = os.environ.get("MAMBADNA_RUN_ID")
        marker = self.path / PREPARED
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.is_file():
                found = marker.read_text().strip()
                if wanted is None or found == wanted:
                    return
            time.sleep(1.0)
        raise ConfigError(f"waited {timeout:.0f} s for rank 0 to prepare the run folder",
                          path=self.path, fix="check rank 0's log; all nodes need the run "
                                              "folder on a shared file system")

    def next_attempt(self) -> int:
        """Version number of this attempt's log folder (logs/version_N)."""
        versions = [int(p.name.split("_", 1)[1]) for p in self.logs.glob("version_*")
                    if p.name.split("_", 1)[1].isdigit()]
        return max(versions, default=-1) + 1


def merge_metrics(folder: RunFolder):
    """Merge every attempt's metrics.csv into RUN_DIR/metrics.csv; return the DataFrame.

    An attempt that was resumed from step k by the next one keeps only its rows up to step k
    (steps count optimizer steps done, mambadna.train.loggers: the rows it logged past its
    last checkpoint were redone by the next attempt).
    """
    import pandas as pd

    attempts = sorted((int(p.name.split("_", 1)[1]), p) for p in folder.logs.glob("version_*")
                      if p.name.split("_", 1)[1].isdigit())
    frames = []
    for i, (_, log_dir) in enumerate(attempts):
        csv = log_dir / "metrics.csv"
        if not csv.is_file() or csv.stat().st_size == 0:
            continue
        frame = pd.read_csv(csv)
        later = [a for a in attempts[i + 1:] if (a[1] / "start_step").is_file()]
        if later and "step" in frame:
            restart = int((later[0][1] / "start_step").read_text())
            frame = frame[frame["step"] <= restart]
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["step", "epoch"])
    columns = ["step", "epoch", *sorted(c for c in merged.columns if c not in ("step", "epoch"))]
    merged = merged.reindex(columns=[c for c in columns if c in merged.columns])
    write_atomic(folder.metrics, merged.to_csv(index=False))
    return merged
