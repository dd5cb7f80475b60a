"""Genome manifests of real data: YAML lists of genome files to download (URL, checksum, labels,
splits).

A manifest is validated here, in code, against ``FIELDS`` (``data_manifests/schema.yaml`` is its
human-readable description, and a test keeps the two identical). Errors name the manifest, the
line of the entry and the field::

    schema_version: 1
    name: great_apes
    description: ...
    base_url: null            # resolves relative entry URLs (e.g. a `mambadna simulate` folder)
    entries:
      - name: hg38
        species: Homo sapiens
        ...

Checksums are never invented: an entry gives ``checksum: md5:<hex>`` / ``sha256:<hex>``, or
``checksum: null`` plus ``checksum_source``, the URL of the provider's checksum list
(``md5sum.txt``, ``md5checksums.txt``, ``SHA256SUMS``) that fetch reads at download time, or
both null: an unverifiable file that fetch downloads only with ``--allow-unverified``.

One entry may stand for one file per chromosome: a ``{chrom}`` placeholder in ``url`` (and
``file``) is expanded over the chromosomes listed in ``split`` (as HyenaDNA downloads
``chr1.fna.gz`` ... per species). Torch-free.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from mambadna.atomic import atomic_directory
from mambadna.errors import InputError, InputFileError

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
COMPRESSIONS = ("none", "gzip", "bgzip")

# name -> (required, meaning). The order is the documented order of schema.yaml.
FIELDS: dict[str, tuple[bool, str]] = {
    "name": (True, "unique id of the entry: letters, digits, '.', '_', '-'"),
    "species": (True, "scientific name, e.g. Homo sapiens"),
    "taxid": (True, "NCBI taxonomy id (positive integer)"),
    "assembly": (True, "assembly name, e.g. hg38 (GRCh38)"),
    "url": (True, "http(s)/ftp/file URL, or a path relative to base_url; may hold {chrom}"),
    "checksum": (True, "md5:<32 hex> or sha256:<64 hex>, or null (then see checksum_source)"),
    "compression": (True, "none, gzip or bgzip: how the file is stored"),
    "size": (True, "file size in bytes, or null when not known"),
    "label": (True, "class label for finetuning (e.g. human), or null for pretraining only"),
    "split": (True, "train/val/test for the whole file, a mapping split -> record names, "
                    "or null"),
    "license": (True, "terms of use of the data and where they are stated"),
    "checksum_source": (False, "URL (or base_url-relative path) of a checksum list "
                               "(md5sum.txt, md5checksums.txt, SHA256SUMS) naming this file"),
    "accession": (False, "INSDC/RefSeq assembly accession, e.g. GCA_000001405.15"),
    "common_name": (False, "common name, e.g. human"),
    "file": (False, "local file name under --dest (default: the URL's file name); "
                    "may hold {chrom}"),
    "kind": (False, "genome (default) or intervals (a BED file of split regions)"),
    "notes": (False, "provenance and anything a user must know"),
}
TOP_FIELDS: dict[str, tuple[bool, str]] = {
    "schema_version": (True, f"must be {SCHEMA_VERSION}"),
    "name": (True, "manifest id"),
    "description": (True, "what the data set is and where it comes from"),
    "base_url": (False, "base for relative entry URLs; null to give it at fetch time"),
    "entries": (True, "list of entries (at least one)"),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEX = {"md5": 32, "sha256": 64}
_SCHEMES = ("http", "https", "ftp", "file")


@dataclass(frozen=True)
class Checksum:
    """An expected digest: ``algorithm`` in {md5, sha256}, lowercase ``hexdigest``."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """``md5:<hex>`` / ``sha256:<hex>`` -> Checksum; ValueError when malformed."""
        algorithm, _, digest = str(text).partition(":")
        algorithm, digest = algorithm.strip().lower(), digest.strip().lower()
        if algorithm not in _HEX or not re.fullmatch(f"[0-9a-f]{{{_HEX[algorithm]}}}", digest):
            raise ValueError(f"checksum must be md5:<32 hex digits> or sha256:<64 hex digits>, "
                             f"got {text!r}")
        return cls(algorithm, digest)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True)
class ManifestEntry:
    """One file to download. ``records`` maps split -> record names when the split is per
    chromosome inside the file; ``split`` is the whole file's split otherwise."""

    name: str
    species: str
    taxid: int
    assembly: str
    url: str
    checksum: Checksum | None
    compression: str
    size: int | None
    label: str | None
    split: str | None
    license: str
    records: dict[str, tuple[str, ...]] = field(default_factory=dict)
    checksum_source: str | None = None
    accession: str | None = None
    common_name: str | None = None
    file: str = ""
    kind: str = "genome"
    notes: str | None = None
    group: str = ""  # the manifest entry this file came from ({chrom} entries expand to many)
    line: int | None = None

    @property
    def verifiable(self) -> bool:
        return self.checksum is not None or self.checksum_source is not None


@dataclass(frozen=True)
class DataManifest:
    """A validated manifest with its entries expanded (one per file)."""

    path: Path
    name: str
    description: str
    base_url: str | None
    entries: tuple[ManifestEntry, ...]

    def select(self, only: list[str] | tuple[str, ...] | None = None) -> list[ManifestEntry]:
        """Entries named in ``only`` (exact names, or the un-expanded name of a {chrom} entry);
        all entries when ``only`` is empty. Unknown names are an InputError."""
        if not only:
            return list(self.entries)
        chosen = [e for e in self.entries if e.name in only or e.group in only]
        found = {e.name for e in chosen} | {e.group for e in chosen}
        missing = [name for name in only if name not in found]
        if missing:
            raise InputError(f"no entries named {missing}", path=self.path,
                             fix=f"pick from: {', '.join(e.name for e in self.entries)}")
        return chosen


# --- validation ---------------------------------------------------------------------------------

class _Checker:
    """Collects the location for errors: the manifest path and the entry's line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str, *, line: int | None = None, record: str | None = None,
             fix: str | None = None) -> InputError:
        return InputError(message, path=self.path, line=line, record=record,
                          fix=fix or "see data_manifests/schema.yaml")


def _keys(check: _Checker, data: dict, spec: dict, where: str, line: int | None,
          record: str | None = None) -> None:
    unknown = sorted(set(data) - set(spec))
    if unknown:
        raise check.fail(f"unknown field(s) {unknown} in {where}", line=line, record=record,
                         fix=f"allowed fields: {', '.join(spec)}")
    missing = [k for k, (required, _) in spec.items() if required and k not in data]
    if missing:
        raise check.fail(f"missing field(s) {missing} in {where} (write `null` where a value "
                         "is not known)", line=line, record=record)


def _text(check, value, name, line, record, *, optional=False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise check.fail(f"{name} must be a non-empty string, got {value!r}", line=line,
                         record=record)
    return value.strip()


def _split(check, value, line, record) -> tuple[str | None, dict[str, tuple[str, ...]]]:
    """``split``: null, a split name, or {split: [record names]} with disjoint lists."""
    if value is None or value in SPLITS:
        return value, {}
    if not isinstance(value, dict) or not value or set(value) - set(SPLITS):
        raise check.fail(f"split must be null, one of {list(SPLITS)}, or a mapping from those "
                         f"splits to lists of record names; got {value!r}", line=line,
                         record=record)
    records, seen = {}, set()
    for split, names in value.items():
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise check.fail(f"split.{split} must be a list of record names", line=line,
                             record=record)
        names = tuple(str(n) for n in names)
        twice = seen & set(names)
        if twice:
            raise check.fail(f"records {sorted(twice)} are in more than one split", line=line,
                             record=record)
        seen |= set(names)
        records[split] = names
    return None, records


def _url(check, value, line, record) -> str:
    url = _text(check, value, "url", line, record)
    scheme = urlparse(url).scheme
    if scheme and scheme not in _SCHEMES:
        raise check.fail(f"url scheme {scheme!r} is not supported", line=line, record=record,
                         fix=f"use one of {', '.join(_SCHEMES)}, or a path relative to base_url")
    return url


def _compression(check, value, url, line, record) -> str:
    if value not in COMPRESSIONS:
        raise check.fail(f"compression must be one of {list(COMPRESSIONS)}, got {value!r}",
                         line=line, record=record)
    gz = PurePosixPath(urlparse(url).path).suffix in (".gz", ".bgz")
    if gz != (value != "none"):
        raise check.fail(f"compression {value!r} does not match the URL's file name", line=line,
                         record=record, fix="use gzip/bgzip for .gz files and none otherwise")
    return value


def _entry(check: _Checker, data: dict, line: int | None) -> ManifestEntry:
    if not isinstance(data, dict):
        raise check.fail(f"an entry must be a mapping, got {type(data).__name__}", line=line)
    record = data.get("name") if isinstance(data.get("name"), str) else None
    _keys(check, data, FIELDS, "entry", line, record)
    name = _text(check, data["name"], "name", line, record)
    if not _NAME.match(name):
        raise check.fail(f"name {name!r} may hold only letters, digits, '.', '_', '-'",
                         line=line, record=record)
    taxid = data["taxid"]
    if not isinstance(taxid, int) or isinstance(taxid, bool) or taxid <= 0:
        raise check.fail(f"taxid must be a positive integer, got {taxid!r}", line=line,
                         record=name)
    url = _url(check, data["url"], line, name)
    try:
        checksum = Checksum.parse(data["checksum"]) if data["checksum"] is not None else None
    except ValueError as err:
        raise check.fail(str(err), line=line, record=name) from None
    size = data["size"]
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise check.fail(f"size must be a positive integer (bytes) or null, got {size!r}",
                         line=line, record=name)
    split, records = _split(check, data["split"], line, name)
    kind = data.get("kind", "genome")
    if kind not in ("genome", "intervals"):
        raise check.fail(f"kind must be genome or intervals, got {kind!r}", line=line,
                         record=name)
    return ManifestEntry(
        name=name, species=_text(check, data["species"], "species", line, name),
        taxid=taxid, assembly=_text(check, data["assembly"], "assembly", line, name), url=url,
        checksum=checksum, compression=_compression(check, data["compression"], url, line, name),
        size=size, label=_text(check, data["label"], "label", line, name, optional=True),
        split=split, license=_text(check, data["license"], "license", line, name),
        records=records,
        checksum_source=_text(check, data.get("checksum_source"), "checksum_source", line, name,
                              optional=True),
        accession=_text(check, data.get("accession"), "accession", line, name, optional=True),
        common_name=_text(check, data.get("common_name"), "common_name", line, name,
                          optional=True),
        file=_text(check, data.get("file"), "file", line, name, optional=True) or "",
        kind=kind, notes=_text(check, data.get("notes"), "notes", line, name, optional=True),
        group=name, line=line)


def _placeholders(check: _Checker, entry: ManifestEntry, field: str, value: str) -> None:
    """{chrom} is the one placeholder; any other ({0}, {name}, a lone brace) is refused here,
    when the manifest is read, rather than failing later inside str.format."""
    import string

    try:
        names = [name for _text, name, _spec, _conv in string.Formatter().parse(value)
                 if name is not None]
    except ValueError as err:
        raise check.fail(f"{field} {value!r}: unbalanced braces ({err})", line=entry.line,
                         record=entry.name, fix="the only placeholder is {chrom}") from None
    other = [name for name in names if name != "chrom"]
    if other:
        raise check.fail(f"{field} {value!r} holds the placeholder {{{other[0]}}}; the only "
                         "placeholder is {chrom}", line=entry.line, record=entry.name,
                         fix="write {chrom} or a plain name")


def _expand(check: _Checker, entry: ManifestEntry) -> list[ManifestEntry]:
    """Default the local file name; expand a {chrom} entry into one entry per chromosome."""
    default_file = PurePosixPath(urlparse(entry.url).path).name
    for name_of, value in (("url", entry.url), ("file", entry.file)):
        _placeholders(check, entry, name_of, value)
    if "{chrom}" not in entry.url:
        if "{chrom}" in entry.file:
            raise check.fail("file has {chrom} but url does not", line=entry.line,
                             record=entry.name)
        return [replace(entry, file=entry.file or default_file)]
    if not entry.records:
        raise check.fail("a url with {chrom} needs split as a mapping split -> chromosomes",
                         line=entry.line, record=entry.name)
    if entry.checksum is not None:
        raise check.fail("a {chrom} entry stands for several files: give checksum_source, "
                         "not one checksum", line=entry.line, record=entry.name)
    template = entry.file or f"{entry.name}/{default_file}"
    return [replace(entry, name=f"{entry.name}.chr{chrom}", url=entry.url.format(chrom=chrom),
                    file=template.format(chrom=chrom), split=split, records={})
            for split, chroms in entry.records.items() for chrom in chroms]


def _entry_lines(text: str) -> list[int | None]:
    """1-based line of each item of the top-level ``entries`` list (for error messages)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "entries" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def load_manifest(path: str | Path) -> DataManifest:
    """Read and validate a YAML data manifest; InputError names the line and field at fault."""
    import yaml

    path = Path(path)
    check = _Checker(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputFileError(f"cannot read manifest: {err.strerror or err}", path=path,
                             fix="check the path (a YAML file) and that you may read it"
                             ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise check.fail(f"not valid YAML: {getattr(err, 'problem', err)}",
                         line=mark.line + 1 if mark else None,
                         fix="check indentation and quoting") from None
    if not isinstance(data, dict):
        raise check.fail("a manifest must be a YAML mapping with schema_version, name, "
                         "description and entries")
    _keys(check, data, TOP_FIELDS, "the manifest", None)
    if data["schema_version"] != SCHEMA_VERSION:
        raise check.fail(f"schema_version must be {SCHEMA_VERSION}, got "
                         f"{data['schema_version']!r}")
    entries_data = data["entries"]
    if not isinstance(entries_data, list) or not entries_data:
        raise check.fail("entries must be a non-empty list")
    lines = _entry_lines(text) or [None] * len(entries_data)
    entries: list[ManifestEntry] = []
    for item, line in zip(entries_data, lines):
        entries += _expand(check, _entry(check, item, line))
    _unique(check, entries)
    return DataManifest(
        path=path, name=_text(check, data["name"], "name", None, None),
        description=_text(check, data["description"], "description", None, None),
        base_url=_text(check, data.get("base_url"), "base_url", None, None, optional=True),
        entries=tuple(entries))


def _unique(check: _Checker, entries: list[ManifestEntry]) -> None:
    names, files = {}, {}
    for entry in entries:
        local = PurePosixPath(entry.file)
        if local.is_absolute() or ".." in local.parts or not entry.file:
            raise check.fail(f"file {entry.file!r} must be a relative path inside --dest",
                             line=entry.line, record=entry.name)
        if entry.file.endswith(("/", "\\")) or local.name in ("", ".") or "\0" in entry.file:
            raise check.fail(f"file {entry.file!r} names a folder, not a file",
                             line=entry.line, record=entry.name,
                             fix="give a file name, e.g. sub/genome.fa.gz")
        if entry.name in names:
            raise check.fail(f"entry name {entry.name!r} is used twice", line=entry.line,
                             record=entry.name)
        names[entry.name] = entry
        if entry.file in files:
            raise check.fail(f"entries {files[entry.file]!r} and {entry.name!r} both download "
                             f"to {entry.file!r}", line=entry.line, record=entry.name,
                             fix="set `file` to distinct names")
        files[entry.file] = entry.name


# --- per-split FASTA files for training ---------------------------------------------------------

@dataclass
class SplitFiles:
    """What ``write_splits`` produced: ``manifest`` (finetuning TSV, labelled rows only; None
    without labels), ``files`` {(name, split): path}, ``skipped`` listed records not found."""

    out_dir: Path
    manifest: Path | None
    files: dict[tuple[str, str], Path]
    skipped: list[tuple[str, str]]


def _split_of(entry: ManifestEntry, record: str) -> str | None:
    if entry.records:
        return next((s for s, names in entry.records.items() if record in names), None)
    return entry.split or "train"  # a whole file without a split trains (finetune TSV rule)


def _fasta_bytes(name: str, sequence: bytes, width: int = 60) -> bytes:
    lines = [sequence[i:i + width] for i in range(0, len(sequence), width)]
    return b">" + name.encode() + b"\n" + b"\n".join(lines) + (b"\n" if lines else b"")


def _check_split_output(out_dir: Path, force: bool) -> None:
    from mambadna.errors import OutputExistsError

    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not force:
        raise OutputExistsError("output folder exists and is not empty", path=out_dir,
                                fix="pass --force to replace it, or choose another")
    foreign = [p.name for p in out_dir.iterdir()
               if not (p.is_file() and (p.suffix == ".fa" or p.name == "manifest.tsv"))]
    if foreign:  # --force replaces earlier split folders only, never an unrelated folder
        raise OutputExistsError(f"output folder holds {foreign[:3]}, not only split files; "
                                "refusing to replace it even with --force", path=out_dir,
                                fix="remove it yourself or choose another folder")


def _cut_records(entries: list[ManifestEntry], dest: Path, tmp: Path):
    """Stream every genome entry's records into ``tmp/<name>.<split>.fa``."""
    from mambadna.io import read_records

    handles, labels, skipped = {}, {}, []
    try:
        for entry in entries:
            name = entry.label or entry.group
            seen = set()
            for record in read_records(dest / entry.file):
                seen.add(record.name)
                split = _split_of(entry, record.name)
                if split is None:
                    continue
                if (name, split) not in handles:
                    handles[(name, split)] = open(tmp / f"{name}.{split}.fa", "wb")
                    labels[(name, split)] = entry.label
                handles[(name, split)].write(_fasta_bytes(record.name, record.sequence))
            skipped += [(entry.name, r) for names in entry.records.values() for r in names
                        if r not in seen]
    finally:
        for handle in handles.values():
            handle.close()
    return labels, skipped


def write_splits(manifest: str | Path | DataManifest, dest: str | Path, out_dir: str | Path, *,
                 only: list[str] | tuple[str, ...] | None = None,
                 force: bool = False) -> SplitFiles:
    """Cut the fetched files of ``manifest`` (in ``dest``) into ``<name>.<split>.fa`` files.

    ``name`` is the entry's label (or its entry name when unlabelled, for pretraining); the
    records of each file go to their split (``split`` of the entry, or its per-record mapping;
    unlisted records are dropped). Writes ``manifest.tsv`` (``path label split``) for the
    labelled files: the input of ``mambadna finetune``. ``only`` restricts to those entries
    (as ``data fetch --only``). The folder is written atomically.
    """
    if not isinstance(manifest, DataManifest):
        manifest = load_manifest(manifest)
    dest, out_dir = Path(dest), Path(out_dir)
    writable = functools.partial(_check_split_output, force=force)
    writable(out_dir)  # before the inputs are checked
    entries = [e for e in manifest.select(only) if e.kind == "genome"]
    missing = [e.file for e in entries if not (dest / e.file).exists()]
    if missing:
        raise InputFileError(f"{len(missing)} file(s) not downloaded, e.g. {missing[0]}",
                             path=dest, fix=f"run `mambadna data fetch {manifest.path} "
                                            f"--dest {dest}` first")
    with atomic_directory(out_dir, check=writable) as tmp:
        labels, skipped = _cut_records(entries, dest, tmp)
        rows = [f"{name}.{split}.fa\t{label}\t{split}" for (name, split), label in labels.items()
                if label is not None]
        if rows:
            (tmp / "manifest.tsv").write_text("path\tlabel\tsplit\n" + "\n".join(rows) + "\n")
    files = {key: out_dir / f"{key[0]}.{key[1]}.fa" for key in labels}
    return SplitFiles(out_dir, out_dir / "manifest.tsv" if rows else None, files, skipped)
