"""From files to training data: token stores, train/validation spans, species per label.

Torch-free. Pretraining inputs (FASTA/FASTQ/BAM) are tokenized once into a token store inside the
run folder (``RUN_DIR/store``, memory-mapped, shared by DataLoader workers and reused on
``--resume``); an existing store can be given instead. Finetuning tokenizes every file of the
manifest into one store and keeps which label and split each record belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mambadna.data.sampling import Span, Split, TokenSource, holdout_split, whole_records
from mambadna.errors import ConfigError
from mambadna.manifests.labelled import ManifestRow, labels_in_order


def tokenized(inputs: Sequence[str | os.PathLike], store_dir: Path, *,
              reuse: bool = False) -> TokenSource:
    """Tokenize ``inputs`` into a token store at ``store_dir`` (reuse it if ``reuse``).

    A reused store must have been made from the same files (resolved paths); anything else is
    a ConfigError, because resuming on other data would silently change the run.
    """
    from mambadna.data.store import TokenStore, write_token_store

    if reuse and (store_dir / "store.json").is_file():
        store = TokenStore(store_dir)
        made_from = sorted(str(Path(p).resolve()) for p in store.meta.get("inputs", []))
        wanted = sorted(str(Path(p).resolve()) for p in inputs)
        if made_from != wanted:
            raise ConfigError("the run's token store was made from other files than the ones "
                              "given now", path=store_dir,
                              fix="resume with the original inputs, or start a new run folder")
        return TokenSource.from_store(store)
    return TokenSource.from_store(write_token_store(list(inputs), store_dir, force=reuse))


@dataclass
class PretrainData:
    """Train and validation spans for pretraining (validation may come from other files)."""

    source: TokenSource
    train: list[Span]
    val_source: TokenSource
    val: list[Span]
    split: dict = field(default_factory=dict)


def pretrain_data(source: TokenSource, val_source: TokenSource | None = None,
                  val_fraction: float = 0.05) -> PretrainData:
    """Hold out validation data from ``source`` (see holdout_split) unless ``val_source``."""
    if val_source is not None:
        split = Split(whole_records(source), whole_records(val_source), "given")
        described = {"rule": "given", "val": sorted(set(val_source.sources)),
                     "train_bases": int(source.lengths.sum()),
                     "val_bases": int(val_source.lengths.sum())}
        return PretrainData(source, split.train, val_source, split.val, described)
    split = holdout_split(source, val_fraction=val_fraction)
    return PretrainData(source, split.train, source, split.val, split.describe(source))


@dataclass
class SpeciesData:
    """Spans per class label (index = position in ``labels``) for each split."""

    labels: list[str]
    source: TokenSource
    train: list[list[Span]]
    val: list[list[Span]]
    test: list[list[Span]]
    split: dict = field(default_factory=dict)


def _rows_of_records(rows: list[ManifestRow], source: TokenSource) -> list[ManifestRow]:
    """The manifest row each record of ``source`` came from."""
    by_path = {row.path.resolve(): row for row in rows}
    out = []
    for i, src in enumerate(source.sources):
        row = by_path.get(Path(src).resolve())
        if row is None:  # the store was made by tokenizing exactly these rows' files
            raise ConfigError(f"record {source.names[i]!r} comes from {src}, which the "
                              "manifest does not list", fix="start a new run folder")
        out.append(row)
    return out


def _check_labels(rows: list[ManifestRow], labels: list[str], manifest: Path) -> None:
    for row in rows:
        if row.label not in labels:
            raise ConfigError(f"label {row.label!r} of a {row.split} row has no train rows "
                              f"(train labels: {', '.join(labels) or 'none'})",
                              path=manifest, line=row.line,
                              fix="add train files for this label or fix the label's spelling")
    if len(labels) < 2:
        raise ConfigError(f"a classifier needs at least 2 labels with train files, found "
                          f"{len(labels)} ({', '.join(labels)})", path=manifest,
                          fix="add train rows for more labels")


def species_data(rows: list[ManifestRow], source: TokenSource, manifest: str | os.PathLike,
                 val_fraction: float = 0.1) -> SpeciesData:
    """Group the records of ``source`` by label and split.

    Labels come in order of first appearance among the train rows. A label without val rows
    holds out part of its train records (holdout_split) so validation never shares sequence
    with training.
    """
    labels = labels_in_order(rows)
    _check_labels(rows, labels, Path(manifest))
    of_record = _rows_of_records(rows, source)
    per = {s: [[] for _ in labels] for s in ("train", "val", "test")}
    for i, row in enumerate(of_record):
        per[row.split][labels.index(row.label)].append(i)
    train, val, test, described = [], [], [], {}
    for k, label in enumerate(labels):
        if per["val"][k]:
            split = Split(whole_records(source, per["train"][k]),
                          whole_records(source, per["val"][k]), "given")
        else:
            split = holdout_split(source, per["train"][k], val_fraction=val_fraction)
        train.append(split.train)
        val.append(split.val)
        test.append(whole_records(source, per["test"][k]))
        described[label] = {**split.describe(source),
                            "test": [source.label(i) for i in per["test"][k]]}
    return SpeciesData(labels, source, train, val, test, described)
