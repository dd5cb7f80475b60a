"""Token store layouts: version 1 stores (one .npy per record) are still read; version 2 (one
ragged array) is what is written; store.json's options are plain JSON that round-trips."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mambadna.alphabet import encode
from mambadna.data import store as store_module
from mambadna.data.store import TokenStore, write_token_store
from mambadna.errors import FormatError
from mambadna.io import ReadOptions

RECORDS = {"chr1": "ACGTNNacgt", "chr2": "GGGGCCCCAT", "chrM": "GATTACA"}


def _write_v1_store(folder, records=RECORDS):
    """A store as mambadna 0.1 wrote it: records/NNNNNN.npy, a ``file`` column, version 1."""
    (folder / "records").mkdir(parents=True)
    rows = {"record": [], "source": [], "file": [], "length": [], "n_count": [], "sha256": []}
    for i, (name, seq) in enumerate(records.items()):
        tokens = encode(seq)
        file = f"records/{i:06d}.npy"
        np.save(folder / file, tokens, allow_pickle=False)
        for key, value in (("record", name), ("source", "g.fa"), ("file", file),
                           ("length", len(tokens)), ("n_count", int((tokens == 9).sum())),
                           ("sha256", hashlib.sha256(tokens).hexdigest())):
            rows[key].append(value)
    pq.write_table(pa.table(rows), folder / "index.parquet")
    (folder / "store.json").write_text(json.dumps(
        {"format": "mambadna-token-store", "version": 1, "records": len(records)}))
    return folder


def test_version_1_stores_are_still_read(tmp_path):
    store = TokenStore(_write_v1_store(tmp_path / "old"))
    assert store.version == 1 and store.names == list(RECORDS)
    for name, seq in RECORDS.items():
        assert np.array_equal(store[name], encode(seq))
    assert isinstance(store["chr2"], np.memmap) and not store["chr2"].flags.writeable
    assert store.verify() == 3
    np.save(tmp_path / "old" / "records" / "000001.npy", encode("GGGGCCCCAA"))
    with pytest.raises(FormatError, match="sha256") as info:
        TokenStore(tmp_path / "old").verify()
    assert info.value.record == "chr2"


def test_version_1_open_records_are_reused_and_pickling_drops_them(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "OPEN_RECORDS", 2)
    store = TokenStore(_write_v1_store(tmp_path / "old"))
    assert store[0] is store[0]  # cached: no open() per access
    store[1], store[2]  # evicts record 0 (least recently used)
    assert len(store._open) == 2 and 0 not in store._open
    clone = pickle.loads(pickle.dumps(store))
    assert not clone._open and np.array_equal(clone["chr2"], encode(RECORDS["chr2"]))


def test_version_1_pickled_record_files_never_run(tmp_path, payload):
    folder = _write_v1_store(tmp_path / "old")
    np.save(folder / "records" / "000001.npy", np.array([payload], dtype=object),
            allow_pickle=True)
    store = TokenStore(folder)
    with pytest.raises(FormatError, match=r"unreadable record file 000001\.npy") as info:
        store[1]
    assert info.value.record == "chr2" and "re-create the store" in str(info.value)
    with pytest.raises(FormatError, match="unreadable record file"):
        store.verify()
    assert not payload.marker.exists()


def test_unknown_versions_say_which_are_read(tmp_path, write_fasta):
    write_token_store([write_fasta(tmp_path / "g.fa", RECORDS)], tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    (tmp_path / "s" / "store.json").write_text(json.dumps({**meta, "version": 9}))
    with pytest.raises(FormatError, match=r"version 9 .*reads versions 1, 2") as info:
        TokenStore(tmp_path / "s")
    assert "mambadna tokenize" in str(info.value)


def test_many_short_reads_make_two_files_and_read_back(tmp_path, write_fastq, random_dna):
    reads = [(f"r{i}", random_dna(20 + i % 7)) for i in range(2000)]
    store = write_token_store([write_fastq(tmp_path / "r.fq", reads)], tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "index.parquet", "store.json", "tokens.bin"]
    assert store.index["offset"].iat[0] == 0
    assert [store[i].tobytes() for i in (0, 999, 1999)] == [
        encode(reads[i][1]).tobytes() for i in (0, 999, 1999)]
    assert store.verify() == 2000


def test_store_json_options_are_json_that_round_trips(tmp_path, write_fasta):
    options = ReadOptions(region=("chr1:2-5",), on_unknown="N", allow_duplicates=True)
    write_token_store([write_fasta(tmp_path / "g.fa", RECORDS)], tmp_path / "s", options)
    text = (tmp_path / "s" / "store.json").read_text()
    recorded = json.loads(text)["options"]
    assert recorded["region"] == ["chr1:2-5"] and recorded["flags"]["skip_secondary"] is True
    assert "ReadFilter(" not in text and "Region(" not in text  # no Python reprs
    assert ReadOptions.from_dict(recorded) == options
