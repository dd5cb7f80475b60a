"""Genome manifests of real data: YAML lists of genome files to download (URL, checksum, labels,
splits).

A manifest is validated with ``jsonschema`` against ``schema.yaml`` (beside this module: a JSON
Schema written in YAML, shipped in the package; ``FIELDS`` and ``TOP_FIELDS`` are read from it),
then here for what a schema cannot say (compression against the URL, disjoint splits, URL
schemes, placeholders, unique names and files). Errors name the manifest, the line of the
entry, the entry and the field, and say what the field must be::

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

SCHEMA_FILE = Path(__file__).with_name("schema.yaml")


@functools.cache
def schema() -> dict:
    """The manifest JSON Schema (schema.yaml beside this module)."""
    import yaml

    return yaml.safe_load(SCHEMA_FILE.read_text())


def _fields(spec: dict) -> dict[str, tuple[bool, str]]:
    required = set(spec.get("required", ()))
    return {name: (name in required, " ".join(prop["description"].split()))
            for name, prop in spec["properties"].items()}


# name -> (required, meaning), in the documented order of schema.yaml.
FIELDS: dict[str, tuple[bool, str]] = _fields(schema()["$defs"]["entry"])
TOP_FIELDS: dict[str, tuple[bool, str]] = _fields(schema())
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
                          fix=fix or "see the manifest schema, mambadna/manifests/schema.yaml")


@functools.cache
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def _expected(spec: dict) -> str:
    """What a property must be (its x-expected, or that of the definition it refers to)."""
    while "x-expected" not in spec and "$ref" in spec:
        spec = schema()["$defs"][spec["$ref"].rsplit("/", 1)[1]]
    return " ".join(str(spec.get("x-expected", "as schema.yaml says")).split())


def _order(err) -> tuple:
    """Errors in the order a reader fixes them: the manifest's own fields, then entry by entry;
    within one mapping unknown fields, then missing ones, then values in field order."""
    path = list(err.absolute_path)
    entry = path[1] if path[:1] == ["entries"] and len(path) > 1 else -1
    inner = path[2:] if entry >= 0 else path
    rank = {"additionalProperties": 0, "required": 1}.get(err.validator, 2) if not inner else 2
    names = list(FIELDS if entry >= 0 else TOP_FIELDS)
    field = names.index(inner[0]) if inner and inner[0] in names else len(names)
    return entry, rank, field


def _schema_error(check: _Checker, err, data: dict, lines: list) -> InputError:
    """A jsonschema error as our InputError: the entry's line and name, the field, what it
    must be and what it is."""
    path = list(err.absolute_path)
    line = record = None
    if path[:1] == ["entries"] and len(path) > 1:
        index, inner, spec, where = path[1], path[2:], FIELDS, "entry"
        line = lines[index] if index < len(lines) else None
        item = data["entries"][index]
        name = item.get("name") if isinstance(item, dict) else None
        record = name if isinstance(name, str) else None
        properties = schema()["$defs"]["entry"]["properties"]
    else:
        inner, spec, where, properties = path, TOP_FIELDS, "the manifest", schema()["properties"]
    if not inner and err.validator == "additionalProperties":
        unknown = sorted((k for k in err.instance if k not in spec), key=str)
        return check.fail(f"unknown field(s) {unknown} in {where}", line=line, record=record,
                          fix=f"allowed fields: {', '.join(spec)}")
    if not inner and err.validator == "required":
        missing = [k for k, (required, _) in spec.items() if required and k not in err.instance]
        return check.fail(f"missing field(s) {missing} in {where} (write `null` where a value "
                          "is not known)", line=line, record=record)
    if not inner:  # the entry itself is no mapping
        return check.fail(f"an entry must be a mapping, got {type(err.instance).__name__}",
                          line=line)
    field = inner[0]
    value = (data["entries"][path[1]] if where == "entry" else data)[field]
    return check.fail(f"{field} must be {_expected(properties[field])}, got {value!r}",
                      line=line, record=record)


def _text(value, *, optional=False) -> str | None:
    """A schema-checked text field, stripped (None stays None)."""
    return None if value is None else str(value).strip()


def _split(check, value, line, record) -> tuple[str | None, dict[str, tuple[str, ...]]]:
    """``split`` (schema-checked): null, a split name, or {split: [record names]}; the lists
    must be disjoint."""
    if value is None or value in SPLITS:
        return value, {}
    records, seen = {}, set()
    for split, names in value.items():
        names = tuple(str(n) for n in names)
        twice = seen & set(names)
        if twice:
            raise check.fail(f"records {sorted(twice)} are in more than one split", line=line,
                             record=record)
        seen |= set(names)
        records[split] = names
    return None, records


def _url(check, value, line, record) -> str:
    url = _text(value)
    try:
        scheme = urlparse(url).scheme
    except ValueError as err:  # e.g. an unclosed '[' read as an IPv6 host
        raise check.fail(f"url {url!r} is not a valid URL ({err})", line=line, record=record,
                         fix="write a full URL (https://host/path/file.fa.gz) or a path "
                             "relative to base_url") from None
    if scheme and scheme not in _SCHEMES:
        raise check.fail(f"url scheme {scheme!r} is not supported", line=line, record=record,
                         fix=f"use one of {', '.join(_SCHEMES)}, or a path relative to base_url")
    return url


def _compression(check, value, url, line, record) -> str:
    gz = PurePosixPath(urlparse(url).path).suffix in (".gz", ".bgz")
    if gz != (value != "none"):
        raise check.fail(f"compression {value!r} does not match the URL's file name", line=line,
                         record=record, fix="use gzip/bgzip for .gz files and none otherwise")
    return value


def _entry(check: _Checker, data: dict, line: int | None) -> ManifestEntry:
    """A schema-checked entry -> ManifestEntry, after the checks a schema cannot make."""
    name = data["name"]
    url = _url(check, data["url"], line, name)
    checksum = Checksum.parse(data["checksum"]) if data["checksum"] is not None else None
    size = data["size"]
    split, records = _split(check, data["split"], line, name)
    return ManifestEntry(
        name=name, species=_text(data["species"]), taxid=int(data["taxid"]),
        assembly=_text(data["assembly"]), url=url, checksum=checksum,
        compression=_compression(check, data["compression"], url, line, name),
        size=None if size is None else int(size), label=_text(data["label"]),
        split=split, license=_text(data["license"]), records=records,
        checksum_source=_text(data.get("checksum_source")),
        accession=_text(data.get("accession")), common_name=_text(data.get("common_name")),
        file=_text(data.get("file")) or "", kind=data.get("kind", "genome"),
        notes=_text(data.get("notes")), group=name, line=line)


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
    entries_data = data.get("entries")
    lines = _entry_lines(text)
    errors = sorted(_validator().iter_errors(data), key=_order)
    if errors:
        raise _schema_error(check, errors[0], data, lines)
    lines = lines or [None] * len(entries_data)
    entries: list[ManifestEntry] = []
    for item, line in zip(entries_data, lines):
        entries += _expand(check, _entry(check, item, line))
    _unique(check, entries)
    return DataManifest(
        path=path, name=_text(data["name"]), description=_text(data["description"]),
        base_url=_text(data.get("base_url")),
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
