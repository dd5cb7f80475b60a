"""The manifest schema (mambadna/manifests/schema.yaml) is a JSON Schema that jsonschema
validates with, the code's field lists come from it, and its errors keep our form: file, line
of the entry, entry name, field, what it must be, what it is."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from mambadna.errors import InputError
from mambadna.manifests.genomes import FIELDS, SCHEMA_FILE, TOP_FIELDS, load_manifest, schema

MANIFEST_DIR = Path(__file__).resolve().parents[2] / "data_manifests"
GOOD = """\
schema_version: 1
name: t
description: test
entries:
  - name: first
    species: Homo sapiens
    taxid: 9606
    assembly: hg38
    url: https://example.org/first.fa.gz
    checksum: null
    compression: gzip
    size: null
    label: human
    split: train
    license: free
  - name: hg38
    species: Homo sapiens
    taxid: 9606
    assembly: hg38
    url: https://example.org/hg38.fa.gz
    checksum: md5:0123456789abcdef0123456789abcdef
    compression: gzip
    size: 1000
    label: human
    split: {train: [chr2], test: [chr1]}
    license: free
"""


def test_the_schema_is_a_json_schema_and_the_source_of_the_field_lists():
    spec = yaml.safe_load(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(spec)
    assert spec == schema() and spec["x-schema-version"] == 1
    entry = spec["$defs"]["entry"]
    assert list(FIELDS) == list(entry["properties"])
    assert {k for k, (required, _) in FIELDS.items() if required} == set(entry["required"])
    assert {k for k, (required, _) in TOP_FIELDS.items() if required} == set(spec["required"])
    assert all(description for _, description in FIELDS.values())


@pytest.mark.parametrize("path", sorted(p for p in MANIFEST_DIR.glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_manifest_is_valid_for_plain_jsonschema(path):
    jsonschema.validate(yaml.safe_load(path.read_text()), schema())
    assert load_manifest(path).entries


@pytest.mark.parametrize(("old", "new", "message"), [
    ("taxid: 9606\n    assembly: hg38\n    url: https://example.org/hg38",
     "taxid: true\n    assembly: hg38\n    url: https://example.org/hg38",
     "taxid must be a positive integer, got True"),
    ("size: 1000", "size: -5", r"size must be a positive integer \(bytes\) or null, got -5"),
    ("split: {train: [chr2], test: [chr1]}", "split: {train: chr2}",
     r"split must be null, one of \['train', 'val', 'test'\], or a mapping"),
    ("  - name: hg38", "  - name: hg 38", "name must be letters, digits"),
    ("    license: free\n", "    license: ' '\n", "license must be a non-empty string"),
    ("md5:0123456789abcdef0123456789abcdef", "crc32:0", "checksum must be md5:<32 hex"),
    ("split: {train: [chr2], test: [chr1]}", "split: train\n    kind: bed",
     "kind must be genome or intervals, got 'bed'"),
])
def test_schema_errors_name_file_line_entry_field_and_value(tmp_path, old, new, message):
    path = tmp_path / "m.yaml"
    text = GOOD[::-1].replace(old[::-1], new[::-1], 1)[::-1]  # the second entry's field
    assert text != GOOD
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        load_manifest(path)
    err = info.value
    assert (err.path, err.line) == (str(path), 16)  # the second entry starts on line 16
    assert err.record in ("hg38", "hg 38")
    assert str(err).startswith(f"{path}:16: record ")


def test_top_level_errors_and_error_order(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(GOOD.replace("description: test\n", "descripton: test\n"))
    with pytest.raises(InputError, match=r"unknown field\(s\) \['descripton'\] in the "
                                         "manifest") as info:
        load_manifest(path)
    assert "allowed fields: schema_version, name, description, base_url, entries" in \
        info.value.fix
    # two problems in one entry: the unknown field is reported before a bad value
    path.write_text(GOOD.replace("    size: 1000\n", "    size: x\n    colour: red\n"))
    with pytest.raises(InputError, match=r"unknown field\(s\) \['colour'\] in entry"):
        load_manifest(path)
    # the first entry's problem comes before the second's
    path.write_text(GOOD.replace("taxid: 9606", "taxid: 0", 2))
    with pytest.raises(InputError) as info:
        load_manifest(path)
    assert info.value.line == 5 and info.value.record == "first"
    path.write_text(GOOD.replace("entries:\n", "entries: 3\nx:\n", 1).split("  - name")[0])
    with pytest.raises(InputError, match="unknown field"):
        load_manifest(path)
