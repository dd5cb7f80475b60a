"""Token stores: sequences as uint8 token arrays on disk, memory-mapped for training.

Layout of a store folder (version 2)::

    tokens.bin      every record's uint8 token ids (mambadna.alphabet), one after another, raw
    index.parquet   record, source, offset, length, n_count, sha256 (of the token bytes)
    store.json      format and version, package version, inputs and options (JSON)

One ragged array (data + offsets) for all records: a store of 100,000 short reads is two files,
not 100,000 (creating files dominated tokenizing reads), and a genome of a few large records
maps the same way. ``store[i]`` is a read-only memory-mapped view into ``tokens.bin``.
Version 1 stores (``records/NNNNNN.npy``, one .npy per record, ``file`` column) are still read.

Writing is atomic (mambadna.atomic): everything goes to a hidden temporary folder beside the
target and is renamed into place only when complete, so an error or interrupt never leaves a
half-written store, and ``force`` replaces an old store only once the new one is whole.
Torch-free.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mambadna._version import __version__
from mambadna.alphabet import N
from mambadna.atomic import atomic_directory
from mambadna.errors import (
    ConfigError,
    DuplicateRecordError,
    FormatError,
    InputFileError,
    OutputExistsError,
)
from mambadna.io import ReadOptions, read_tokens
from mambadna.io.files import check_path
from mambadna.progress import bar

STORE_FORMAT = "mambadna-token-store"
OPEN_RECORDS = 256  # version 1: memmaps kept open per store (no open() and mmap per store[i])
STORE_VERSION = 2
READS_VERSIONS = (1, 2)
TOKENS_FILE = "tokens.bin"
INDEX_COLUMNS = ("record", "source", "offset", "length", "n_count", "sha256")
V1_INDEX_COLUMNS = ("record", "source", "file", "length", "n_count", "sha256")
_WRITE_BUFFER = 8 << 20
_SHORT = 1 << 16


def _check_target(out: Path, force: bool) -> None:
    """Refuse to replace anything but an existing token store (or an empty folder)."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise OutputExistsError("output already exists", path=out,
                                fix="pass --force to replace it, or choose another --out")
    is_store = out.is_dir() and (out / "store.json").is_file()
    if not is_store and not (out.is_dir() and not any(out.iterdir())):
        raise OutputExistsError("exists and is not a token store; --force only replaces "
                                "token stores", path=out, fix="choose another --out")


def _tokenize_inputs(inputs: Sequence[Path], tmp: Path, options: ReadOptions,
                     progress: bool | None = None) -> dict:
    """Append every record of every input to tokens.bin; return the index columns."""
    columns: dict[str, list] = {name: [] for name in INDEX_COLUMNS}
    names, sources, offsets, lengths, n_counts, digests = (columns[c] for c in INDEX_COLUMNS)
    offset = 0
    with open(tmp / TOKENS_FILE, "wb", buffering=_WRITE_BUFFER) as out, \
            bar("tokenize", enabled=progress) as shown:
        for name, source, tokens in _records(inputs, options, shown):
            out.write(tokens)
            names.append(name)
            sources.append(source)
            offsets.append(offset)
            lengths.append(len(tokens))
            n_counts.append(_count_n(tokens))
            digests.append(hashlib.sha256(tokens).hexdigest())
            offset += len(tokens)
    if not names:
        raise FormatError("the inputs hold no records (after filtering)",
                          path=inputs[0] if len(inputs) == 1 else None,
                          fix="check the inputs, region and read filters")
    return columns


def _records(inputs: Sequence[Path], options: ReadOptions, shown):
    """read_tokens of every input, counted on the bar ``shown`` (bases; the file and record)."""
    for path in inputs:
        for name, source, tokens in read_tokens(path, options):
            shown.set_postfix_str(f"{path.name}:{name}", refresh=False)
            shown.update(len(tokens))
            yield name, source, tokens


def _count_n(tokens: np.ndarray) -> int:
    """N tokens in a record: bytes.count for short reads (numpy's per-call cost dominates
    there), numpy without a copy for long records."""
    if len(tokens) < _SHORT:
        return tokens.tobytes().count(N)
    return int(np.count_nonzero(tokens == N))


def _write_index(columns: dict[str, list], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("record", pa.string()), ("source", pa.string()),
                        ("offset", pa.int64()), ("length", pa.int64()),
                        ("n_count", pa.int64()), ("sha256", pa.string())])
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)


def write_token_store(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: ReadOptions | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
    **read_opts,
) -> TokenStore:
    """Tokenize every record of ``inputs`` (FASTA/FASTQ/SAM/BAM/CRAM) into a store at out_dir.

    options / read_opts: how to read (mambadna.io.ReadOptions and its fields as keywords):
    on_invalid / on_unknown say what IUPAC codes / other bytes become (see alphabet.encode);
    allow_duplicates accepts repeated record names within a file (names may always repeat
    across files: look such records up with ``store.get(name, source=...)``); fmt, region,
    reference, flags as for read_records. Recorded in store.json.
    progress: a bar of bases on stderr (None: when stderr is a terminal; mambadna.progress).
    Raises OutputExistsError if out_dir exists and not force; never leaves partial output.
    """
    options = ReadOptions.of(options, **read_opts)
    paths = [check_path(p) for p in inputs]  # all inputs exist before any work starts
    if not paths:
        raise ConfigError("no inputs given", fix="pass one or more FASTA/FASTQ/BAM files")
    repeated = {p for p in paths if sum(q.resolve() == p.resolve() for q in paths) > 1}
    if repeated:
        raise ConfigError(f"input given twice: {sorted(map(str, repeated))[0]}",
                          fix="list each input once")
    out = Path(out_dir)
    with atomic_directory(out, check=lambda target: _check_target(target, force)) as tmp:
        columns = _tokenize_inputs(paths, tmp, options, progress)
        _write_index(columns, tmp / "index.parquet")
        meta = {"format": STORE_FORMAT, "version": STORE_VERSION,
                "package_version": __version__,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "tokens": "uint8 ids of mambadna.alphabet: PAD=0 A=5 C=6 G=7 T=8 N=9",
                "inputs": [os.fspath(p) for p in paths],
                "options": options.to_dict(),
                "records": len(columns["record"]), "total_length": sum(columns["length"])}
        (tmp / "store.json").write_text(json.dumps(meta, indent=2) + "\n")
    return TokenStore(out)


class TokenStore:
    """A token store on disk. ``store[i]`` / ``store["chr1"]`` -> read-only np.memmap (uint8).

    Attributes: index (pandas DataFrame, INDEX_COLUMNS; V1_INDEX_COLUMNS for a version 1
    store), names, sources (one per record), lengths (np.int64 array), total_length, meta
    (store.json), version.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import pandas as pd

        self.path = Path(path)
        meta_path = self.path / "store.json"
        if not meta_path.is_file():
            raise InputFileError("not a token store (no store.json)", path=self.path,
                                 fix="create one with `mambadna tokenize INPUT... -o DIR`")
        try:
            self.meta = json.loads(meta_path.read_text())
        except (ValueError, OSError) as err:
            raise FormatError(f"unreadable store.json ({err})", path=meta_path,
                              fix="re-create the store with `mambadna tokenize`") from None
        self.version = self.meta.get("version") if isinstance(self.meta, dict) else None
        if (not isinstance(self.meta, dict) or self.meta.get("format") != STORE_FORMAT
                or self.version not in READS_VERSIONS):
            found = self.meta.get("format") if isinstance(self.meta, dict) else None
            raise FormatError(f"unsupported store format {found!r} version {self.version!r} "
                              f"(this mambadna reads versions "
                              f"{', '.join(map(str, READS_VERSIONS))})",
                              path=meta_path, fix="re-create the store with `mambadna tokenize`")
        self.index = pd.read_parquet(self.path / "index.parquet")
        columns = V1_INDEX_COLUMNS if self.version == 1 else INDEX_COLUMNS
        missing = set(columns) - set(self.index.columns)
        if missing:
            raise FormatError(f"index.parquet lacks columns {sorted(missing)}",
                              path=self.path / "index.parquet",
                              fix="re-create the store with `mambadna tokenize`")
        self.names: list[str] = self.index["record"].tolist()
        self.sources: list[str] = self.index["source"].tolist()
        self.lengths: np.ndarray = self.index["length"].to_numpy(dtype=np.int64)
        self._offsets: np.ndarray | None = (
            self.index["offset"].to_numpy(dtype=np.int64) if self.version != 1 else None)
        self._data: np.ndarray | None = None  # tokens.bin, mapped on first access
        self._open: OrderedDict[int, np.memmap] = OrderedDict()  # version 1: LRU of records
        self._rows_by_name: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            self._rows_by_name.setdefault(name, []).append(i)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._rows_by_name

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r}, records={len(self)}, bases={self.total_length})"

    @property
    def total_length(self) -> int:
        return int(self.lengths.sum())

    def position(self, name: str, source: str | None = None) -> int:
        """Row number of record ``name`` (of ``source`` when names repeat across inputs)."""
        rows = self._rows_by_name.get(name)
        if not rows:
            raise KeyError(f"no record {name!r} in token store {self.path}")
        if source is not None:
            rows = [i for i in rows if self.sources[i] == os.fspath(source)]
            if not rows:
                raise KeyError(f"no record {name!r} from {source} in token store {self.path}")
        if len(rows) > 1:
            raise DuplicateRecordError(
                f"{len(rows)} records share this name (sources: "
                f"{', '.join(self.sources[i] for i in rows[:3])})", path=self.path,
                record=name, fix="use store.get(name, source=...) or an integer index")
        return rows[0]

    def get(self, name: str, source: str | None = None) -> np.memmap:
        return self[self.position(name, source)]

    def __getitem__(self, key: int | str) -> np.memmap:
        if isinstance(key, str):
            key = self.position(key)
        i = range(len(self))[key]  # IndexError and negative indices like a list
        if self._offsets is not None:
            start = int(self._offsets[i])
            return self._tokens()[start:start + int(self.lengths[i])]
        tokens = self._open.pop(i, None)
        if tokens is None:
            tokens = self._load_v1(i)
            if len(self._open) >= OPEN_RECORDS:
                self._open.popitem(last=False)
        self._open[i] = tokens
        return tokens

    def _tokens(self) -> np.ndarray:
        """tokens.bin mapped read-only (checked once against the index: its size and offsets)."""
        if self._data is not None:
            return self._data
        file = self.path / TOKENS_FILE
        expected = int(self.lengths.sum())
        size = file.stat().st_size if file.is_file() else None
        ends = self._offsets + self.lengths
        if size != expected or (len(ends) and (self._offsets[0] != 0
                                               or (self._offsets[1:] != ends[:-1]).any())):
            found = "missing" if size is None else f"{size:,} bytes"
            raise FormatError(f"{TOKENS_FILE} is {found}, but index.parquet describes "
                              f"{expected:,} bytes of tokens in order", path=file,
                              fix="re-create the store with `mambadna tokenize`")
        # An empty file cannot be mapped; a store of empty records reads as empty views.
        self._data = (np.memmap(file, dtype=np.uint8, mode="r") if expected
                      else np.zeros(0, dtype=np.uint8))
        return self._data

    def _load_v1(self, i: int) -> np.memmap:
        """Map record ``i``'s file (version 1): uint8 tokens only. allow_pickle=False: a .npy
        of Python objects would be unpickled (code run) by a permissive load; it is refused."""
        file = self.path / self.index["file"].iat[i]
        try:
            tokens = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise FormatError(f"unreadable record file {file.name} ({err})", path=file,
                              record=self.names[i], fix="re-create the store") from None
        if (not isinstance(tokens, np.ndarray) or tokens.dtype != np.uint8 or tokens.ndim != 1
                or len(tokens) != self.lengths[i]):
            raise FormatError(f"record file holds {getattr(tokens, 'dtype', type(tokens))} "
                              f"{getattr(tokens, 'shape', '')}, expected uint8 "
                              f"({self.lengths[i]},)", path=file, record=self.names[i],
                              fix="re-create the store")
        return tokens

    def __getstate__(self) -> dict:
        """Pickles (e.g. to DataLoader workers) without open memmaps; they reopen lazily."""
        state = dict(self.__dict__)
        state["_open"], state["_data"] = OrderedDict(), None
        return state

    def verify(self) -> int:
        """Check every record: layout, dtype, length and sha256. Returns the count."""
        if self._offsets is not None:
            self._data = None  # re-check the file's size, in case it changed since
        for i in range(len(self)):
            tokens = self[i] if self._offsets is not None else self._load_v1(i)
            if hashlib.sha256(tokens).hexdigest() != self.index["sha256"].iat[i]:
                where = (self.path / TOKENS_FILE if self._offsets is not None
                         else self.path / self.index["file"].iat[i])
                raise FormatError("sha256 of the tokens does not match the index", path=where,
                                  record=self.names[i], fix="re-create the store")
        return len(self)
