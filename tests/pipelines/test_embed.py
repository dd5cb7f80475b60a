"""Embedding pipeline: Parquet schema and metadata, coordinates, pooled values checked against
the model, strands, streaming with a carried state (exactness, order, flat memory), inputs of
every format, bad input and interrupted runs, several-GPU split and merge (ranks emulated on
the CPU), the command line.

The model is a small random MambaDNA (the "tiny" preset made narrower): values are compared
with the model's own hidden states, so trained weights are not needed here.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import mambadna as md
from mambadna.alphabet import encode, reverse_complement
from mambadna.cli import cli
from mambadna.errors import (
    AlphabetError,
    ConfigError,
    InputError,
    ModelFileError,
    OutputExistsError,
)
from mambadna.model import MambaDNA, ModelConfig, load_model
from mambadna.pipelines import inference
from mambadna.pipelines.embed import embed_on_devices
from mambadna.pipelines.run import RunOptions
from mambadna.pipelines.tiling import windows

D_MODEL = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = MambaDNA(ModelConfig.from_preset("tiny", d_model=D_MODEL, n_layer=2))
    return model.save_pretrained(tmp_path_factory.mktemp("embed") / "model",
                                 training_info={"seq_len": 64})


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


@pytest.fixture
def genome(tmp_path, write_fasta, random_dna):
    """Records of 200, 64, 150 and 20 bases; chr2 holds a run of N."""
    chr2 = random_dna(30, seed=2) + "N" * 20 + random_dna(14, seed=3)
    records = {"chr1": random_dna(200, seed=1), "chr2": chr2, "chr3": random_dna(150, seed=4),
               "tiny": random_dna(20, seed=5)}
    return write_fasta(tmp_path / "genome.fa", records), records


def no_leftovers(folder, keep=()):
    """No temporary or part files beside the outputs."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")
                  or ".part-" in p.name) == sorted(keep)


def manual(model, seq: str, pool: str = "mean") -> np.ndarray:
    """The pooled hidden state of one window, straight from the model."""
    tokens = torch.from_numpy(encode(seq).astype(np.int64))[None]
    with torch.inference_mode():
        hidden = model.hidden_states(tokens)[0]
    keep = tokens[0] != 9
    keep = keep if keep.any() else torch.ones_like(keep)
    if pool == "last":
        return hidden[-1].numpy()
    if pool == "max":
        return hidden[keep].amax(0).numpy()
    return hidden[keep].mean(0).numpy()


# ------------------------------------------------------------------ file format


def test_parquet_schema_and_metadata_are_exact(tmp_path, model_dir, genome):
    path, _ = genome
    out = md.embed(model_dir, [path], tmp_path / "emb.parquet", progress=False)
    assert out == tmp_path / "emb.parquet"
    schema = pq.read_schema(out)
    expected = pa.schema([("source", pa.string()), ("record_id", pa.string()),
                          ("start", pa.int64()),
                          ("end", pa.int64()), ("strand", pa.string()),
                          ("n_fraction", pa.float32()),
                          ("embedding", pa.list_(pa.float32(), D_MODEL))])
    assert schema.equals(expected, check_metadata=False)
    meta = json.loads(schema.metadata[b"mambadna"])
    sha = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert meta["version"] == md.__version__ and meta["weights_sha256"] == sha
    assert meta["weights_checksum_of"] == "model.safetensors"
    assert meta["model_config"] == load_model(model_dir).config.to_dict()
    assert (meta["window"], meta["stride"], meta["min_window"]) == (64, 64, 32)  # trained 64
    assert meta["pooling"] == "mean" and meta["stream"] is False
    assert meta["strand"] == "+" and meta["strand_handling"] == "forward strand"
    assert meta["inputs"] == [str(path)] and meta["regions"] is None
    frame = pd.read_parquet(out)
    assert (frame["source"] == str(path)).all()
    assert list(frame.columns) == expected.names
    assert frame["embedding"].iloc[0].dtype == np.float32
    assert frame["embedding"].iloc[0].shape == (D_MODEL,)
    # chr1 200 -> 3 full windows (tail 8 < 32), chr2 64 -> 1, chr3 150 -> 2 (tail 22), tiny -> 0
    assert frame.groupby("record_id", sort=False).size().to_dict() == {
        "chr1": 3, "chr2": 1, "chr3": 2}
    assert no_leftovers(tmp_path)


def test_row_groups_bound_what_is_held(tmp_path, model_dir, genome):
    path, _ = genome
    out = md.embed(model_dir, path, tmp_path / "e.parquet", window=16, row_group_size=4,
                   progress=False)
    meta = pq.ParquetFile(out).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes[:-1] == [4] * (len(sizes) - 1) and 0 < sizes[-1] <= 4
    assert sum(sizes) == len(pd.read_parquet(out))


def test_coordinates_follow_windows_in_input_order(tmp_path, model, genome, write_fastq,
                                                   random_dna):
    path, records = genome
    reads = {"read1": random_dna(45, seed=7), "read2": random_dna(9, seed=8)}
    fastq = write_fastq(tmp_path / "reads.fq.gz", reads, compress="gzip")
    frame = md.embed(model, [path, fastq], window=50, stride=30, min_window=10,
                     progress=False)
    expected = []
    for name, seq in {**records, **reads}.items():
        for start, end in windows(len(seq), 50, 30, 10).tolist():
            window = seq[start:end]
            expected.append((name, start, end, window.count("N") / len(window)))
    got = list(zip(frame.record_id, frame.start, frame.end, frame.n_fraction))
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    np.testing.assert_allclose([g[3] for g in got], [e[3] for e in expected], rtol=1e-6)
    assert frame.loc[frame.record_id == "chr1", "end"].max() == 200  # the record end
    assert (frame.strand == "+").all()


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("pool", ["mean", "max", "last"])
def test_pooled_values_match_the_model(model, genome, pool):
    path, records = genome
    frame = md.embed(model, path, window=40, min_window=5, pool=pool, batch_size=3,
                     progress=False)
    for row in frame.itertuples():
        seq = records[row.record_id][row.start:row.end]
        np.testing.assert_allclose(row.embedding, manual(model, seq, pool), atol=2e-5,
                                   err_msg=f"{row.record_id}:{row.start}-{row.end}")
    assert len(frame) == 12 and frame["end"].iloc[-1] == 20  # padded partial windows too


def test_all_n_windows_fall_back_to_every_base(tmp_path, model, write_fasta):
    path = write_fasta(tmp_path / "n.fa", {"gap": "N" * 30})
    frame = md.embed(model, path, window=30, progress=False)
    assert frame.n_fraction.tolist() == [1.0]
    np.testing.assert_allclose(frame.embedding.iloc[0], manual(model, "N" * 30), atol=2e-5)


def test_rc_average_is_the_mean_of_both_strands(model, genome):
    path, records = genome
    frame = md.embed(model, path, window=64, rc_average=True, progress=False)
    assert (frame.strand == ".").all()
    assert frame.attrs["mambadna"]["strand_handling"] == "mean of both strands"
    row = frame.iloc[1]
    seq = records[row.record_id][row.start:row.end]
    rc = md.decode(reverse_complement(encode(seq)))
    expected = (manual(model, seq) + manual(model, rc)) / 2
    np.testing.assert_allclose(row.embedding, expected, atol=2e-5)


# ------------------------------------------------------------------ streaming


def stack(frame):
    return np.stack(frame.embedding.to_numpy())


def test_stream_equals_one_pass_over_the_whole_record(model, genome):
    path, records = genome
    streamed = md.embed(model, path, window=64, stream=True, pool="mean", progress=False)
    windowed = md.embed(model, path, window=64, pool="mean", progress=False)
    assert streamed[["record_id", "start", "end"]].equals(windowed[["record_id", "start",
                                                                    "end"]])
    for name in ("chr1", "chr3"):
        tokens = torch.from_numpy(encode(records[name]).astype(np.int64))[None]
        with torch.inference_mode():
            hidden = model.hidden_states(tokens)[0].numpy()  # the whole record in one pass
        rows = streamed[streamed.record_id == name]
        for row in rows.itertuples():
            np.testing.assert_allclose(row.embedding, hidden[row.start:row.end].mean(0),
                                       atol=2e-5)
    # First windows start from a zero state either way; later ones see the record before.
    first = streamed.start == 0
    np.testing.assert_allclose(stack(streamed[first]), stack(windowed[first]), atol=2e-5)
    assert np.abs(stack(streamed[~first]) - stack(windowed[~first])).max() > 1e-3


def test_stream_with_state_reset_per_window_equals_windows(tmp_path, model, write_fasta,
                                                           random_dna):
    # One window per record: the stream restarts its state at every window.
    records = {f"r{i}": random_dna(n, seed=i) for i, n in enumerate([64, 50, 33, 64, 40])}
    path = write_fasta(tmp_path / "w.fa", records)
    streamed = md.embed(model, path, window=64, stream=True, batch_size=3, progress=False)
    windowed = md.embed(model, path, window=64, batch_size=3, progress=False)
    assert streamed.drop(columns="embedding").equals(windowed.drop(columns="embedding"))
    np.testing.assert_allclose(stack(streamed), stack(windowed), atol=2e-5)


def test_stream_lanes_keep_input_order(tmp_path, model, write_fasta, random_dna, monkeypatch):
    lengths = [300, 10, 64, 130, 500, 70, 5, 200]  # 10 and 5: no window
    records = {f"r{i}": random_dna(n, seed=i) for i, n in enumerate(lengths)}
    path = write_fasta(tmp_path / "lanes.fa", records)
    one = md.embed(model, path, window=32, stream=True, batch_size=1, progress=False)
    monkeypatch.setattr(inference, "MAX_HELD_ROWS", 3)  # idle lanes wait for earlier records
    for batch in (3, 8):
        many = md.embed(model, path, window=32, stream=True, batch_size=batch,
                        progress=False)
        assert many.drop(columns="embedding").equals(one.drop(columns="embedding"))
        np.testing.assert_allclose(stack(many), stack(one), atol=2e-5)


def _peak_bytes(model, path, out) -> int:
    """Peak of Python and numpy allocations (tracemalloc) while stream-embedding ``path``."""
    gc.collect()
    tracemalloc.start()
    try:
        md.embed(model, path, out, window=8192, stream=True, force=True, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _warm_up(model, path, out) -> None:
    """Fill what is allocated once per process: imports, and torch's internal caches, which
    keep ~100 bytes per forward call for the first few hundred calls."""
    md.embed(model, path, out, window=64, stream=True, force=True, progress=False)
    tokens = torch.randint(5, 9, (1, 16))
    with torch.inference_mode():
        for _ in range(600):
            model.hidden_states(tokens, state=model.allocate_state(1), return_state=True)


def test_stream_memory_does_not_grow_with_record_length(tmp_path, write_fasta, random_dna):
    pysam = pytest.importorskip("pysam")
    torch.manual_seed(0)
    small = MambaDNA(ModelConfig.from_preset("tiny", d_model=8, n_layer=1, d_state=4))
    _warm_up(small, write_fasta(tmp_path / "warm.fa", {"r": random_dna(100)}),
             tmp_path / "warm.parquet")
    peaks = {}
    for name, length in (("short", 40_000), ("long", 240_000)):
        path = write_fasta(tmp_path / f"{name}.fa", {"chr1": random_dna(length, seed=1)})
        pysam.faidx(str(path))  # indexed: windows are read from disk
        peaks[name] = _peak_bytes(small, path, tmp_path / f"{name}.parquet")
    # Six times the bases, (almost) the same peak: what grows is about 1 kB per window (its
    # output row, held until its row group is written), not per base.
    assert peaks["long"] - peaks["short"] < 0.25 * 200_000, peaks
    # The same measurement sees a record held in memory (no index): > 2 bytes per base.
    (tmp_path / "long.fa.fai").unlink()
    held = _peak_bytes(small, tmp_path / "long.fa", tmp_path / "long.parquet")
    assert held - peaks["long"] > 2 * 240_000, (held, peaks)


# ------------------------------------------------------------------ inputs and errors


def test_bam_reads_are_records(tmp_path, model, random_dna):
    pysam = pytest.importorskip("pysam")
    header = {"HD": {"VN": "1.6", "SO": "unsorted"}}
    path = tmp_path / "reads.bam"
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for i, flag in enumerate([4, 4, 4 | 256]):  # the last: secondary, filtered out
            read = pysam.AlignedSegment(bam.header)
            read.query_name, read.flag = f"read{i}", flag
            read.query_sequence = random_dna(40, seed=i)
            read.reference_id = read.reference_start = -1
            bam.write(read)
    frame = md.embed(model, path, window=40, progress=False)
    assert frame.record_id.tolist() == ["read0", "read1"]
    only_secondary = md.ReadFilter if hasattr(md, "ReadFilter") else None
    assert only_secondary is None or only_secondary
    with pytest.raises(InputError, match="no records"):
        md.embed(model, path, tmp_path / "none.parquet", window=40, progress=False,
                 flags=_skip_everything())
    assert not (tmp_path / "none.parquet").exists() and no_leftovers(tmp_path)


def _skip_everything():
    from mambadna.io import ReadFilter

    return ReadFilter(skip_unmapped=True)


def test_bad_outputs_fail_before_any_work(tmp_path, model_dir, genome):
    path, _ = genome
    with pytest.raises(ConfigError, match="output folder does not exist"):
        md.embed(model_dir, path, tmp_path / "missing" / "e.parquet")
    with pytest.raises(ConfigError, match=r"extension '\.csv'") as info:
        md.embed(model_dir, path, tmp_path / "e.csv")
    assert ".parquet, .tsv" in info.value.fix
    with pytest.raises(ModelFileError, match="model folder not found"):
        md.embed(tmp_path / "nope", path, tmp_path / "e.parquet")
    target = tmp_path / "e.parquet"
    target.write_text("old")
    with pytest.raises(OutputExistsError, match="--force"):
        md.embed(model_dir, path, target, progress=False)
    assert target.read_text() == "old"
    md.embed(model_dir, path, target, force=True, progress=False)
    assert len(pd.read_parquet(target)) == 6 and no_leftovers(tmp_path)


def test_no_window_anywhere_is_an_error_without_output(tmp_path, model, genome):
    path, _ = genome
    with pytest.raises(InputError, match=r"longest has 200 bases.*--min-window"):
        md.embed(model, path, tmp_path / "e.parquet", window=1000, progress=False)
    assert not (tmp_path / "e.parquet").exists() and no_leftovers(tmp_path)


def test_a_bad_record_midway_leaves_no_file(tmp_path, model, write_fasta, random_dna):
    path = write_fasta(tmp_path / "bad.fa", {"ok": random_dna(300), "bad": "ACGT" * 20 + "X"})
    with pytest.raises(AlphabetError) as err:
        md.embed(model, path, tmp_path / "e.parquet", window=16, row_group_size=2,
                 progress=False)
    assert "bad.fa:" in str(err.value) and "'bad'" in str(err.value)
    assert not (tmp_path / "e.parquet").exists() and no_leftovers(tmp_path)


def test_an_interrupt_leaves_no_file(tmp_path, model, genome, monkeypatch):
    path, _ = genome
    calls = []
    real = inference.WindowRunner._values

    def interrupted(self, arrays, state=None, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, arrays, state, **kwargs)

    monkeypatch.setattr(inference.WindowRunner, "_values", interrupted)
    with pytest.raises(KeyboardInterrupt):
        md.embed(model, path, tmp_path / "e.parquet", window=16, batch_size=2,
                 row_group_size=2, progress=False)
    assert not (tmp_path / "e.parquet").exists() and no_leftovers(tmp_path)


# ------------------------------------------------------------------ several GPUs


@pytest.mark.parametrize("n", [2, 3])
def test_ranks_split_records_and_merge_in_input_order(tmp_path, model_dir, genome, n):
    path, _ = genome
    single = md.embed(model_dir, path, tmp_path / "one.parquet", window=32, progress=False)
    result = embed_on_devices(
        model_dir, path, tmp_path / "many.parquet", RunOptions(window=32, devices=n,
                                                                progress=False),
        pool="mean", force=False, row_group_size=2, device_type="cpu", processes=False)
    merged = pq.read_table(result.out)
    expected = pq.read_table(single)
    assert merged.schema.equals(expected.schema, check_metadata=False)
    assert merged.drop_columns("embedding").equals(expected.drop_columns("embedding"))
    np.testing.assert_allclose(np.stack(merged.column("embedding").to_numpy(False)),
                               np.stack(expected.column("embedding").to_numpy(False)),
                               atol=1e-6)
    assert json.loads(merged.schema.metadata[b"mambadna"])["devices"] == n
    assert result.n_records == 4 and result.n_windows == len(expected)
    assert no_leftovers(tmp_path)  # part files removed after the merge


@pytest.mark.slow  # ~15 s: two spawned processes (the CLI's: tests/pipelines/test_parallel.py)
def test_rank_processes_are_spawned(tmp_path, model_dir, genome):
    path, _ = genome
    out = tmp_path / "spawned.parquet"
    result = embed_on_devices(model_dir, path, out, RunOptions(window=64, devices=2),
                              pool="mean", force=False, row_group_size=None,
                              device_type="cpu", processes=True)
    assert pd.read_parquet(out).record_id.tolist() == ["chr1"] * 3 + ["chr2"] + ["chr3"] * 2
    assert result.n_windows == 6 and no_leftovers(tmp_path)


def test_more_devices_than_gpus_is_a_clear_error(tmp_path, model_dir, genome):
    path, _ = genome
    count = torch.cuda.device_count()
    n = max(2, count + 1)
    with pytest.raises(ConfigError, match=f"{n} GPUs, but {count} CUDA"):
        md.embed(model_dir, path, tmp_path / "e.parquet", devices=n)
    assert no_leftovers(tmp_path)


# ------------------------------------------------------------------ command line, progress


def test_cli_embed(tmp_path, model_dir, genome):
    path, _ = genome
    out = tmp_path / "cli.parquet"
    args = ["embed", "--model", str(model_dir), str(path), "-o", str(out), "--window", "64",
            "--pool", "max", "--stream", "--quiet", "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"{out}: 4 records, 6 windows" in result.output
    assert json.loads(pq.read_schema(out).metadata[b"mambadna"])["pooling"] == "max"
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "already exists" in again.output
    assert "Traceback" not in again.output


# ------------------------------------------------------------------ GPU (pytest -m gpu)


@pytest.mark.gpu
@pytest.mark.parametrize("stream", [False, True])
def test_cuda_embeddings_match_the_cpu(model_dir, genome, stream):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    path, _ = genome
    cpu = md.embed(model_dir, path, device="cpu", stream=stream, progress=False)
    for precision, tolerance in (("fp32", 1e-3), ("bf16", 5e-2)):
        gpu = md.embed(model_dir, path, device="cuda", stream=stream, precision=precision,
                       progress=False)
        assert gpu.drop(columns="embedding").equals(cpu.drop(columns="embedding"))
        assert gpu.attrs["mambadna"]["precision"] == precision
        np.testing.assert_allclose(stack(gpu), stack(cpu), atol=tolerance, rtol=tolerance)


@pytest.mark.gpu
def test_two_gpus_write_the_single_gpu_file(tmp_path, model_dir, genome):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    path, _ = genome
    one = md.embed(model_dir, path, tmp_path / "one.parquet", device="cuda",
                   precision="fp32", progress=False)
    two = md.embed(model_dir, path, tmp_path / "two.parquet", devices=2, precision="fp32",
                   progress=False)
    a, b = pd.read_parquet(one), pd.read_parquet(two)
    assert a.drop(columns="embedding").equals(b.drop(columns="embedding"))
    np.testing.assert_allclose(stack(a), stack(b), atol=1e-4)
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize("read_only", [False, True])
def test_cli_embed_on_a_full_or_read_only_disk(tmp_path, model_dir, write_fasta, random_dna,
                                               small_filesystem, read_only):
    path = write_fasta(tmp_path / "big.fa", {"chr1": random_dna(40_000)})
    folder = small_filesystem("8k", read_only=read_only)
    out = folder / "e.parquet"
    result = CliRunner().invoke(cli, ["embed", "--model", str(model_dir), str(path), "-o",
                                      str(out), "--window", "32", "--quiet", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: {folder}") and "Fix:" in result.output
    assert ("not writable" if read_only else "No space left") in result.output  # checked first
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1
    assert os.listdir(folder) == []
