"""GenBank and EMBL input: detected from the content (plain and gzip), read through
Biopython, covered by validate and tokenize, errors naming file, record and line."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from click.testing import CliRunner

from mambadna.alphabet import encode
from mambadna.cli import cli
from mambadna.data.store import write_token_store
from mambadna.errors import AlphabetError, ConfigError, DuplicateRecordError, FormatError
from mambadna.io import detect_format, read_records, read_tokens
from mambadna.io.validate import validate_file

SEQ1 = "gagttttatcgcttccatgacgcagaagttaacactttcggatatttctgatgagtcgaaaaattatcttgataaagcaggaattac"
SEQ2 = "ACGTACGTNNACGT"


def _origin(seq: str) -> str:
    rows = []
    for start in range(0, len(seq), 60):
        chunk = seq[start:start + 60]
        blocks = " ".join(chunk[i:i + 10] for i in range(0, len(chunk), 10))
        rows.append(f"{start + 1:>9} {blocks}")
    return "\n".join(rows)


def genbank_record(accession: str, seq: str,
                   definition: str = "Test phage, complete genome.") -> str:
    locus = f"LOCUS       {accession.split('.')[0]:<16}{len(seq):>12} bp    DNA     circular PHG"
    return f"""{locus} 06-MAR-2018
DEFINITION  {definition}
ACCESSION   {accession.split('.')[0]}
VERSION     {accession}
KEYWORDS    RefSeq.
SOURCE      Escherichia virus phiX174
  ORGANISM  Escherichia virus phiX174
            Viruses; Monodnaviria; Sangervirae; Phixviricota.
FEATURES             Location/Qualifiers
     source          1..{len(seq)}
                     /organism="Escherichia virus phiX174"
                     /mol_type="genomic DNA"
     gene            1..30
                     /gene="A"
ORIGIN
{_origin(seq)}
//
"""


def embl_record(accession: str, seq: str) -> str:
    rows = []
    for start in range(0, len(seq), 60):
        chunk = seq[start:start + 60].lower()
        blocks = " ".join(chunk[i:i + 10] for i in range(0, len(chunk), 10))
        rows.append(f"     {blocks:<66}{min(start + 60, len(seq)):>9}")
    body = "\n".join(rows)
    name, version = accession.split(".")
    return f"""ID   {name}; SV {version}; linear; genomic DNA; STD; PRO; {len(seq)} BP.
XX
AC   {accession.split('.')[0]};
XX
DE   Test bacterium plasmid, complete sequence.
XX
OS   Escherichia coli
OC   Bacteria; Pseudomonadota.
XX
FH   Key             Location/Qualifiers
FH
FT   source          1..{len(seq)}
FT                   /organism="Escherichia coli"
XX
SQ   Sequence {len(seq)} BP; 0 A; 0 C; 0 G; 0 T; 0 other;
{body}
//
"""


@pytest.fixture
def gb(tmp_path):
    path = tmp_path / "phage.gbk"
    path.write_text(genbank_record("NC_001422.1", SEQ1) + genbank_record("MN908947.3", SEQ2))
    return path


def test_genbank_plain_and_gzip(tmp_path, gb):
    packed = tmp_path / "phage.gb.gz"
    packed.write_bytes(gzip.compress(gb.read_bytes()))
    for path in (gb, packed):
        assert detect_format(path) == "genbank"
        first, second = read_records(path)
        # Biopython reads GenBank bases in capitals
        assert (first.name, first.sequence.decode(), first.line) == (
            "NC_001422.1", SEQ1.upper(), 1)
        assert first.description == "Test phage, complete genome"
        assert (second.name, second.sequence.decode(), second.line) == ("MN908947.3", SEQ2, 19)
        names = [name for name, _, _ in read_tokens(path)]
        assert names == ["NC_001422.1", "MN908947.3"]


def test_embl_and_name_does_not_matter(tmp_path):
    path = tmp_path / "plasmid.txt"  # detected from the content, not the name
    path.write_text(embl_record("CP000001.2", SEQ1) + embl_record("CP000002.1", "ACGTT"))
    assert detect_format(path) == "embl"
    records = list(read_records(path))
    assert [(r.name, r.sequence.decode().lower(), r.line) for r in records] == [
        ("CP000001.2", SEQ1, 1), ("CP000002.1", "acgtt", 19)]
    assert records[0].description == "Test bacterium plasmid, complete sequence."


def test_tokenize_and_validate_cover_genbank(tmp_path, gb):
    store = write_token_store([gb], tmp_path / "store")
    assert store.names == ["NC_001422.1", "MN908947.3"]
    assert np.array_equal(store["MN908947.3"], encode(SEQ2))
    summary = validate_file(gb)
    assert summary.ok and summary.format == "genbank" and summary.records == 2
    assert summary.bases == len(SEQ1) + len(SEQ2) and summary.n_count == 2
    result = CliRunner().invoke(cli, ["validate", str(gb)])
    assert result.exit_code == 0, result.output
    assert "genbank" in result.output and "records=2" in result.output


def test_bad_base_names_file_record_and_sequence_line(tmp_path):
    seq = SEQ1[:70] + "x" + SEQ1[71:]
    path = tmp_path / "bad.gb"
    path.write_text(genbank_record("NC_001422.1", SEQ2) + genbank_record("NC_000002.1", seq))
    with pytest.raises(AlphabetError) as info:
        list(read_tokens(path))
    # record 2 starts on line 18, ORIGIN on line 32: base 71 is on the second sequence line
    assert (info.value.record, info.value.line) == ("NC_000002.1", 34)
    assert info.value.path == str(path)
    summary = validate_file(path, collect_all=True)
    assert not summary.ok and summary.problems[0].line == 34
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1 and f"{path}:34: record 'NC_000002.1'" in result.output


def test_broken_files_are_format_errors_with_file_and_line(tmp_path, gb):
    broken = tmp_path / "broken.gb"
    text = gb.read_text()
    second = text.index("LOCUS", 10)
    broken.write_text(text[:second] + text[second:].replace("ORIGIN", "ORIGXN"))
    with pytest.raises(FormatError) as info:
        list(read_records(broken))
    assert info.value.line == 19 and str(broken) in str(info.value)
    assert "Traceback" not in CliRunner().invoke(cli, ["validate", str(broken)]).output
    empty = tmp_path / "contig.gb"
    contig = "CONTIG      join(A:1..14)\n//\n"
    empty.write_text(genbank_record("NC_1.1", SEQ2).split("ORIGIN")[0] + contig)
    with pytest.raises(FormatError, match="no sequence") as info:
        list(read_records(empty))
    assert info.value.record == "NC_1.1" and info.value.line == 1
    dup = tmp_path / "dup.gb"
    dup.write_text(genbank_record("NC_1.1", SEQ2) * 2)
    with pytest.raises(DuplicateRecordError, match="first seen on line 1"):
        list(read_records(dup))
    with pytest.raises(ConfigError, match="region"):
        read_records(gb, region="NC_001422.1:1-10")
