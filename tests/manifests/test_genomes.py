"""Data manifests: every shipped manifest validates (the schema: test_schema.py); bad
manifests fail with the line and field; fetched genomes are cut into per-split files."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import InputError, OutputExistsError
from mambadna.manifests.genomes import (
    SPLITS,
    Checksum,
    load_manifest,
    write_splits,
)

MANIFEST_DIR = Path(__file__).resolve().parents[2] / "data_manifests"
SHIPPED = sorted(p for p in MANIFEST_DIR.glob("*.yaml") if p.name != "schema.yaml")


def test_the_expected_manifests_ship():
    assert {p.stem for p in SHIPPED} >= {"great_apes", "hg38_pretrain", "hyenadna_species",
                                         "demo"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_manifest_validates(path):
    manifest = load_manifest(path)
    assert manifest.entries
    for entry in manifest.entries:
        assert entry.license and entry.species and entry.taxid > 0
        if not entry.verifiable:  # unverifiable files must say how to get them
            assert "--allow-unverified" in (entry.notes or "")
        for split in entry.records:
            assert split in SPLITS


def test_great_apes_and_hyenadna_sets():
    apes = load_manifest(MANIFEST_DIR / "great_apes.yaml")
    assert [e.label for e in apes.entries] == ["human", "chimpanzee", "bonobo", "gorilla",
                                               "orangutan"]
    assert [e.assembly.split()[0] for e in apes.entries] == ["hg38", "panTro6", "panPan3",
                                                             "gorGor6", "ponAbe3"]
    for entry in apes.entries:
        assert entry.url.startswith("https://hgdownload.soe.ucsc.edu/goldenPath/")
        assert entry.checksum_source.endswith("/bigZips/md5sum.txt")
        assert entry.records["val"] == ("chr1", "chr3", "chr12", "chr13")
    species = load_manifest(MANIFEST_DIR / "hyenadna_species.yaml")
    assert {e.label for e in species.entries} == {"human", "lemur", "mouse", "pig", "hippo"}
    human = [e for e in species.entries if e.group == "human"]
    assert {e.split for e in human} == set(SPLITS)
    assert {e.file for e in human if e.split == "test"} == {
        f"human/chr{c}.fna.gz" for c in (5, 7, 9, 10, 11)}
    assert len(species.select(["pig"])) == 20


GOOD_ENTRY = """\
  - name: hg38
    species: Homo sapiens
    taxid: 9606
    assembly: hg38
    url: https://example.org/hg38.fa.gz
    checksum: md5:0123456789abcdef0123456789abcdef
    compression: gzip
    size: null
    label: human
    split: {train: [chr2], test: [chr1]}
    license: free
"""


def manifest_text(entries: str = GOOD_ENTRY) -> str:
    return ("schema_version: 1\nname: t\ndescription: test\nentries:\n" + entries)


@pytest.mark.parametrize("change, message", [
    (("    size: null\n", ""), r"missing field\(s\) \['size'\]"),
    (("    license: free\n", "    license: free\n    colour: red\n"), "unknown field"),
    (("md5:0123456789abcdef0123456789abcdef", "md5:xyz"), "checksum must be md5"),
    (("taxid: 9606", "taxid: human"), "taxid must be a positive integer"),
    (("compression: gzip", "compression: none"), "does not match the URL"),
    (("{train: [chr2], test: [chr1]}", "{train: [chr1], test: [chr1]}"),
     "more than one split"),
    (("{train: [chr2], test: [chr1]}", "holdout"), "split must be null"),
    (("https://example.org/hg38.fa.gz", "gopher://x/hg38.fa.gz"), "scheme"),
])
def test_invalid_entries_name_line_and_field(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    first = GOOD_ENTRY.replace("hg38", "first")
    path.write_text(manifest_text(first + GOOD_ENTRY.replace(*change)))
    with pytest.raises(InputError, match=message) as info:
        load_manifest(path)
    # 4 header lines + 11 lines of the first entry: the second entry starts on line 16
    assert info.value.line == 16 and info.value.path == str(path)
    assert f"{path}:16:" in str(info.value)


def test_manifest_level_errors(tmp_path):
    path = tmp_path / "m.yaml"
    cases = {
        manifest_text(GOOD_ENTRY + GOOD_ENTRY): "used twice",
        manifest_text(GOOD_ENTRY.replace("hg38.fa.gz", "{chrom}.fa.gz").replace(
            "{train: [chr2], test: [chr1]}", "train")): "needs split as a",
        manifest_text(GOOD_ENTRY.replace("hg38.fa.gz", "{chrom}.fa.gz")): "not one checksum",
        manifest_text(GOOD_ENTRY + "    file: ../../etc/passwd\n"): "relative path inside",
        manifest_text().replace("schema_version: 1", "schema_version: 2"): "schema_version",
        manifest_text("  []\n"): "entries must be a non-empty list",
        "entries: [\n  - name: x\n  bad": "not valid YAML",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            load_manifest(path)


def test_checksum_parsing():
    assert str(Checksum.parse("SHA256:" + "AB" * 32)) == "sha256:" + "ab" * 32
    for bad in ("md5:123", "crc32:00000000", "0" * 32):
        with pytest.raises(ValueError):
            Checksum.parse(bad)


def test_select_by_name(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(manifest_text())
    manifest = load_manifest(path)
    assert [e.name for e in manifest.select(["hg38"])] == ["hg38"]
    with pytest.raises(InputError, match="no entries named"):
        manifest.select(["hg19"])


def test_cli_check_lists_every_shipped_manifest():
    result = CliRunner().invoke(cli, ["data", "check", *map(str, SHIPPED)])
    assert result.exit_code == 0, result.output
    assert "great_apes, 5 files" in result.output and "UNVERIFIABLE" in result.output


# --- per-split files (uses mambadna.io.read_records) -------------------------------------------

def _reader_available() -> bool:
    import mambadna.io

    return hasattr(mambadna.io, "read_records")


@pytest.mark.skipif(not _reader_available(), reason="mambadna.io.read_records not available")
def test_write_splits_from_fetched_demo_genomes(tmp_path):
    dest = tmp_path / "fetched"
    dest.mkdir()
    for label in ("human", "chimpanzee", "bonobo", "gorilla", "orangutan"):
        records = "".join(f">chr{i}\n{'ACGT' * i}\n" for i in (1, 2, 3, 4))
        (dest / f"{label}.fa").write_text(records)
    out = tmp_path / "splits"
    result = write_splits(MANIFEST_DIR / "demo.yaml", dest, out)
    rows = result.manifest.read_text().splitlines()
    assert rows[0] == "path\tlabel\tsplit" and len(rows) == 1 + 5 * 3
    assert "human.train.fa\thuman\ttrain" in rows
    assert (out / "gorilla.train.fa").read_text() == ">chr1\nACGT\n>chr2\nACGTACGT\n"
    assert (out / "gorilla.test.fa").read_text() == ">chr4\n" + "ACGT" * 4 + "\n"
    assert result.skipped == []
    with pytest.raises(OutputExistsError):
        write_splits(MANIFEST_DIR / "demo.yaml", dest, out)
    (dest / "human.fa").write_text(">chr1\nAC\n>chr2\nGT\n>chr3\nAA\n")  # no chr4
    again = write_splits(MANIFEST_DIR / "demo.yaml", dest, out, force=True)
    assert again.skipped == [("human", "chr4")]
    assert not (out / "human.test.fa").exists()
