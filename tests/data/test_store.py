"""Token stores and ``mambadna tokenize``: layout, contents, atomic writes, --force, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from mambadna.alphabet import encode
from mambadna.cli import cli
from mambadna.data import store as store_module
from mambadna.data.store import TokenStore, write_token_store
from mambadna.errors import (
    AlphabetError,
    ConfigError,
    DuplicateRecordError,
    FormatError,
    InputFileError,
    OutputExistsError,
)
from mambadna.io import read_records, read_tokens

GENOME = {"chr1": "ACGTNNacgtRYAC" * 3, "chr2": "GGGGCCCCAT", "chrM": "GATTACA"}


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))  # temporary names


def test_store_layout_and_contents(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa.gz", GENOME, compress="gzip", width=8)
    store = write_token_store([fa], tmp_path / "store")
    files = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert files == ["index.parquet", "store.json", "tokens.bin"]  # one file for all records
    schema = pq.read_schema(tmp_path / "store" / "index.parquet")
    assert [(f.name, str(f.type)) for f in schema] == [
        ("record", "string"), ("source", "string"), ("offset", "int64"), ("length", "int64"),
        ("n_count", "int64"), ("sha256", "string")]
    assert (tmp_path / "store" / "tokens.bin").stat().st_size == 59
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    assert meta["format"] == "mambadna-token-store" and meta["version"] == 2
    assert meta["inputs"] == [str(fa)] and meta["records"] == 3
    assert store.names == ["chr1", "chr2", "chrM"] and len(store) == 3
    assert store.sources == [str(fa)] * 3
    assert store.lengths.tolist() == [42, 10, 7] and store.total_length == 59
    assert store.index["n_count"].tolist() == [12, 0, 0]  # NN and R, Y read as N
    tokens = store["chr1"]
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint8
    assert not tokens.flags.writeable
    assert np.array_equal(tokens, encode(GENOME["chr1"]))
    assert store.index["sha256"].iat[2] == hashlib.sha256(encode("GATTACA")).hexdigest()
    assert np.array_equal(store[-1], store[2]) and "chrM" in store and "chrX" not in store
    assert store.verify() == 3
    with pytest.raises(IndexError):
        store[3]
    with pytest.raises(KeyError):
        store["chrX"]


def test_several_inputs_and_formats(tmp_path, write_fasta, write_fastq):
    a = write_fasta(tmp_path / "human.fa", {"chr1": "ACGT", "chr2": "GG"})
    b = write_fasta(tmp_path / "chimp.fa", {"chr1": "TTTT"}, compress="bgzip")
    reads = write_fastq(tmp_path / "reads.fq.gz", [("r1", "ACGTN")], compress="gzip")
    store = write_token_store([a, b, reads], tmp_path / "store")
    assert store.names == ["chr1", "chr2", "chr1", "r1"]
    # Names repeat across genomes: ask by source, or by position.
    with pytest.raises(DuplicateRecordError, match="share this name"):
        store["chr1"]
    assert store.get("chr1", source=str(b)).tolist() == encode("TTTT").tolist()
    assert store["r1"].tolist() == [5, 6, 7, 8, 9]


def test_region_and_options(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa", GENOME)
    store = write_token_store([fa], tmp_path / "s1", region=["chr1:1-4", "chrM"])
    assert store.names == ["chr1:1-4", "chrM"]
    with pytest.raises(AlphabetError, match="IUPAC") as info:
        write_token_store([fa], tmp_path / "s2", on_invalid="error")
    assert (info.value.record, info.value.position, info.value.line) == ("chr1", 10, 2)
    assert not (tmp_path / "s2").exists() and _leftovers(tmp_path) == []


def test_invalid_character_names_file_record_position_and_line(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa", {"ok": "ACGT", "bad": "ACGTACGT" + "ACGU"}, width=4)
    with pytest.raises(AlphabetError) as info:
        write_token_store([fa], tmp_path / "store")
    err = info.value
    assert (err.path, err.record, err.position, err.line) == (str(fa), "bad", 11, 6)
    assert str(err).startswith(f"{fa}:6: record 'bad', position 11")
    unknown_as_n = write_token_store([fa], tmp_path / "store", on_unknown="N")
    assert unknown_as_n["bad"][-1] == 9


def test_refuses_to_overwrite_without_force(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa", GENOME)
    write_token_store([fa], tmp_path / "store")
    with pytest.raises(OutputExistsError, match="--force"):
        write_token_store([fa], tmp_path / "store")
    smaller = write_fasta(tmp_path / "small.fa", {"x": "ACGT"})
    store = write_token_store([smaller], tmp_path / "store", force=True)
    assert store.names == ["x"] and (tmp_path / "store" / "tokens.bin").stat().st_size == 4
    assert _leftovers(tmp_path) == []


def test_force_never_deletes_what_is_not_a_store(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa", GENOME)
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputExistsError, match="not a token store"):
        write_token_store([fa], precious, force=True)
    assert (precious / "thesis.tex").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(write_token_store([fa], empty, force=True)) == 3


def test_failures_leave_no_partial_output_and_keep_the_old_store(tmp_path, write_fasta):
    good = write_fasta(tmp_path / "good.fa", GENOME)
    bad = write_fasta(tmp_path / "bad.fa", {"x": "ACGT", "y": "AC*T"})
    write_token_store([good], tmp_path / "store")
    with pytest.raises(AlphabetError):
        write_token_store([good, bad], tmp_path / "store", force=True)
    assert TokenStore(tmp_path / "store").names == ["chr1", "chr2", "chrM"]
    with pytest.raises(AlphabetError):
        write_token_store([good, bad], tmp_path / "new")
    assert not (tmp_path / "new").exists() and _leftovers(tmp_path) == []


def test_interrupt_cleans_up(tmp_path, write_fasta, monkeypatch):
    fa = write_fasta(tmp_path / "g.fa", GENOME)
    calls = []
    read = store_module.read_tokens

    def interrupted(path, options):
        for item in read(path, options):
            calls.append(item[0])
            if len(calls) == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(store_module, "read_tokens", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_token_store([fa], tmp_path / "store")
    assert len(calls) == 2
    assert not (tmp_path / "store").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("on_invalid", ["N", "error"])
@pytest.mark.parametrize("on_unknown", ["N", "error"])
def test_fused_fasta_tokens_equal_read_then_encode(tmp_path, on_invalid, on_unknown):
    """read_tokens encodes FASTA while parsing; it must match read_records + encode."""
    fa = tmp_path / "messy.fa"
    fa.write_bytes(b">a\r\nAC gt\r\nNn\t\r\n>b x\nRYacgu*\n\n>c\nGG\n")
    expected = []
    for record in read_records(fa):
        try:
            expected.append(encode(record.sequence, on_invalid=on_invalid,
                                   on_unknown=on_unknown).tolist())
        except AlphabetError as err:
            expected.append(("error", record.name, err.position))
            break
    got = []
    try:
        for _, _, tokens in read_tokens(fa, on_invalid=on_invalid, on_unknown=on_unknown):
            got.append(tokens.tolist())
    except AlphabetError as err:
        got.append(("error", err.record, err.position))
        assert err.line == 5 and err.path == str(fa)
    assert got == expected


def test_bad_inputs_fail_before_any_work(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa", GENOME)
    with pytest.raises(InputFileError, match="no such file"):
        write_token_store([fa, tmp_path / "missing.fa"], tmp_path / "store")
    with pytest.raises(ConfigError, match="given twice"):
        write_token_store([fa, tmp_path / "." / "g.fa"], tmp_path / "store")
    with pytest.raises(ConfigError, match="no inputs"):
        write_token_store([], tmp_path / "store")
    assert not (tmp_path / "store").exists() and _leftovers(tmp_path) == []


def test_verify_detects_damage_and_bad_folders(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa", GENOME)
    store = write_token_store([fa], tmp_path / "store")
    data = tmp_path / "store" / "tokens.bin"
    tokens = bytearray(data.read_bytes())
    tokens[42:52] = encode("GGGGCCCCAA").tobytes()  # chr2: same length, other bases
    data.write_bytes(bytes(tokens))
    with pytest.raises(FormatError, match="sha256") as info:
        store.verify()
    assert info.value.record == "chr2"
    data.write_bytes(bytes(tokens[:-1]))  # truncated
    with pytest.raises(FormatError, match=r"tokens\.bin is 58 bytes.*59 bytes"):
        TokenStore(tmp_path / "store")[0]
    with pytest.raises(InputFileError, match="not a token store"):
        TokenStore(tmp_path)


# --- CLI -----------------------------------------------------------------------------------


def test_cli_tokenize(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa", GENOME)
    runner = CliRunner()
    result = runner.invoke(cli, ["tokenize", str(fa), "-o", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert "3 records, 59 bases (12 N)" in result.output
    again = runner.invoke(cli, ["tokenize", str(fa), "-o", str(tmp_path / "store")])
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    forced = runner.invoke(cli, ["tokenize", str(fa), "-o", str(tmp_path / "store"), "--force",
                                 "--region", "chr2:3-6"])
    assert forced.exit_code == 0 and TokenStore(tmp_path / "store").names == ["chr2:3-6"]


def test_cli_tokenize_errors(tmp_path, write_fasta):
    fa = write_fasta(tmp_path / "g.fa", {"a": "ACGT", "a ": "GG"})  # duplicate name 'a'
    runner = CliRunner()
    result = runner.invoke(cli, ["tokenize", str(fa), "-o", str(tmp_path / "store")])
    assert result.exit_code == 1
    assert f"error: {fa}:3: record 'a': duplicate record name" in result.output
    ok = runner.invoke(cli, ["tokenize", str(fa), "-o", str(tmp_path / "store"),
                             "--allow-duplicates"])
    assert ok.exit_code == 0, ok.output
    strict = runner.invoke(cli, ["tokenize", str(fa), "-o", str(tmp_path / "s2"),
                                 "--on-invalid", "error", "--format", "fastq"])
    assert strict.exit_code == 1 and "expected a FASTQ header" in strict.output
    assert not (tmp_path / "s2").exists() and _leftovers(tmp_path) == []


def test_installed_command_runs_end_to_end(tmp_path, write_fasta, write_fastq):
    """The one real subprocess call: the console script, as users run it."""
    exe = shutil.which("mambadna", path=os.path.dirname(sys.executable))
    command = [exe] if exe else [sys.executable, "-m", "mambadna"]
    fa = write_fasta(tmp_path / "g.fa.gz", GENOME, compress="bgzip")
    fq = write_fastq(tmp_path / "r.fq", [("read1", "ACGTT")])
    done = subprocess.run([*command, "tokenize", str(fa), str(fq), "-o", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert TokenStore(tmp_path / "s").names == ["chr1", "chr2", "chrM", "read1"]


def test_records_are_views_of_one_mapping_and_pickling_drops_it(tmp_path, write_fasta):
    import pickle

    fa = write_fasta(tmp_path / "g.fa", GENOME)
    store = write_token_store([fa], tmp_path / "store")
    first, second = store[0], store[1]
    assert first.base is not None and store._data is not None
    assert np.shares_memory(store._tokens(), second)  # no open() or mmap per record
    clone = pickle.loads(pickle.dumps(store))
    assert clone._data is None and np.array_equal(clone["chr2"], encode(GENOME["chr2"]))


def test_full_disk_and_read_only_output_are_one_line_errors(tmp_path, write_fasta, random_dna,
                                                             small_filesystem):
    fa = write_fasta(tmp_path / "g.fa", {"chr1": random_dna(300_000)})
    full, read_only = small_filesystem("64k"), small_filesystem(read_only=True)
    for folder, message in ((full, "No space left on device"), (read_only, "read-only")):
        result = CliRunner().invoke(cli, ["tokenize", str(fa), "-o", str(folder / "store")])
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"error: {folder / 'store'}: cannot write")
        assert message in result.output and "Fix:" in result.output
        assert "Traceback" not in result.output and len(result.output.splitlines()) == 1
        assert os.listdir(folder) == []  # nothing half-written, no temporary left


def test_missing_or_unreadable_manifests_are_domain_errors(tmp_path):
    for args in (["data", "check", str(tmp_path / "none.yaml")],
                 ["data", "check", str(tmp_path)],
                 ["data", "fetch", str(tmp_path / "none.yaml"), "--dest", str(tmp_path)],
                 ["data", "split", str(tmp_path / "none.yaml"), "--dest", str(tmp_path / "d"),
                  "-o", str(tmp_path / "o")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)  # not click's usage error (2)
        assert result.output.startswith("error: ") and "cannot read manifest" in result.output
