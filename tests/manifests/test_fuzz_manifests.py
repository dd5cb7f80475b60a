"""Fuzzing the manifest readers (genome YAML, labelled TSV): any text either reads or raises one
of our domain errors, never another exception (issue 19)."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mambadna.errors import MambaDNAError
from mambadna.manifests import load_manifest
from mambadna.manifests.labelled import read_manifest

VALID_YAML = """schema_version: 1
name: test
description: fuzz
base_url: null
entries:
  - name: g
    species: Homo sapiens
    taxid: 9606
    assembly: test
    url: https://example.org/{chrom}.fa.gz
    checksum: null
    checksum_source: https://example.org/md5sum.txt
    compression: gzip
    size: null
    label: human
    split: {train: [1, 2], val: [3]}
    license: test
    file: x/{chrom}.fa.gz
"""
YAML_PIECES = ["\n", "  ", "- ", ": ", "{", "}", "[", "]", "'", '"', "name", "file", "url",
               "split", "{chrom}", "{0}", "..", "/", ".", "null", "1", "-1", "1e400", "~",
               "!!python/object:os.system", "&a", "*a", "<<: *a", "\t", "#", "\x00", "é"]


def _lines(text: str) -> st.SearchStrategy[str]:
    lines = text.splitlines(keepends=True)
    return st.lists(st.tuples(st.integers(0, len(lines) - 1),
                              st.lists(st.sampled_from(YAML_PIECES), max_size=4).map("".join)),
                    max_size=4).map(lambda edits: _apply(lines, edits))


def _apply(lines: list[str], edits) -> str:
    out = list(lines)
    for index, text in edits:
        out[index] = out[index].rstrip("\n")[: len(out[index]) // 2] + text + "\n"
    return "".join(out)


yaml_texts = st.one_of(_lines(VALID_YAML), st.lists(st.sampled_from(YAML_PIECES),
                                                    max_size=30).map("".join), st.text())
tsv_texts = st.lists(st.sampled_from(["path", "label", "split", "\t", "\n", "a.fa", "../x",
                                      "/abs.fa", "train", "val", "test", "#", " ", "\r\n",
                                      "é", "\x00", '"']), max_size=40).map("".join)


def _load(reader, text: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(text)
        try:
            reader(path)
        except MambaDNAError:
            pass  # ours: fine; anything else fails the test


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=yaml_texts)
def test_any_genome_manifest_reads_or_raises_a_domain_error(text):
    _load(load_manifest, text, "m.yaml")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=tsv_texts)
def test_any_labelled_manifest_reads_or_raises_a_domain_error(text):
    _load(read_manifest, text, "m.tsv")
