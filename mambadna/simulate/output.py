"""Writing a simulation: FASTA (+ samtools .fai index), the split manifest, the JSON record,
all into a temporary folder (mambadna.atomic.atomic_directory) that replaces the output folder
only when complete; ``check_replaceable`` says which output folders it may replace."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mambadna.errors import OutputExistsError

_LETTERS = np.frombuffer(b"ACGTacgt", dtype=np.uint8)
LINE_WIDTH = 60


def to_letters(bases: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Codes 0-3 -> ASCII letters (L,) uint8; lowercase where ``mask`` (soft-masking)."""
    index = bases if mask is None else bases + 4 * mask.astype(np.uint8)
    return _LETTERS[index]


def _wrapped(letters: np.ndarray, width: int) -> bytes:
    """Sequence lines of ``width`` letters, each ending in a newline, without a per-line loop."""
    full = len(letters) // width
    body = np.empty((full, width + 1), dtype=np.uint8)
    body[:, :width] = letters[: full * width].reshape(full, width)
    body[:, width] = ord("\n")
    tail = letters[full * width:].tobytes()
    return body.tobytes() + (tail + b"\n" if tail else b"")


def write_fasta(path: Path, records: list[tuple[str, np.ndarray]], width: int = LINE_WIDTH) -> None:
    """Write ``(name, letters)`` records as FASTA plus a samtools-compatible ``path.fai``.

    The index lets pysam/samtools fetch intervals without re-indexing.
    """
    offset = 0
    fai = []
    with open(path, "wb") as handle:
        for name, letters in records:
            header = f">{name}\n".encode()
            handle.write(header)
            offset += len(header)
            fai.append(f"{name}\t{len(letters)}\t{offset}\t{width}\t{width + 1}\n")
            body = _wrapped(letters, width)
            handle.write(body)
            offset += len(body)
    Path(f"{path}.fai").write_text("".join(fai))


def write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """The finetuning manifest: header ``path label split``, paths relative to its folder."""
    lines = ["path\tlabel\tsplit"] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def write_checksums(folder: Path, name: str = "SHA256SUMS") -> None:
    """``sha256sum``-format list of every file in ``folder`` (what ``data fetch`` verifies)."""
    lines = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != name):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
        lines.append(f"{digest.hexdigest()}  {path.name}\n")
    (folder / name).write_text("".join(lines))


def check_replaceable(out_dir: Path, force: bool) -> None:
    """An output folder may be written: absent, empty, or (with force) an earlier simulation."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise OutputExistsError("output exists and is not a directory", path=out_dir,
                                fix="choose another -o/--out-dir")
    if not any(out_dir.iterdir()):
        return
    if not force:
        raise OutputExistsError("output directory exists and is not empty", path=out_dir,
                                fix="pass --force (force=True) to replace it, or choose another")
    if not (out_dir / "simulation.json").exists():
        # --force replaces earlier simulations only: never delete an unrelated folder.
        raise OutputExistsError(
            "output directory is not a previous simulation (no simulation.json); refusing to "
            "delete it even with --force", path=out_dir,
            fix="remove it yourself or choose another directory")
