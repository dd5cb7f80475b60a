"""Config file errors name the file and the line, and an unknown key gets the nearest valid one."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mambadna.errors import ConfigError
from mambadna.train.config import FinetuneConfig, PretrainConfig, dump_yaml, load_config


def _write(tmp_path, text: str):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


def test_an_unknown_key_names_its_line_and_the_nearest_valid_key(tmp_path):
    path = _write(tmp_path, "genomes: [g.fa]\nout_dir: run\n\n# the window\nseq_lenn: 512\n")
    with pytest.raises(ConfigError) as info:
        load_config(PretrainConfig, path)
    err = info.value
    assert (err.path, err.line) == (str(path), 5)
    assert str(err).startswith(f"{path}:5: unknown key(s) 'seq_lenn' in a pretrain config")
    assert err.fix.startswith("did you mean seq_len? valid keys are:")
    # dashes (the flag's spelling) are read as the key they mean
    path = _write(tmp_path, "genomes: [g.fa]\nout_dir: run\nmax-steps: 5\n")
    with pytest.raises(ConfigError, match=r"train\.yaml:3: .*did you mean max_steps\?"):
        load_config(PretrainConfig, path)
    # nothing close: the valid keys only
    path = _write(tmp_path, "manifest: m.tsv\nout_dir: run\npreset: tiny\nzzz: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(FinetuneConfig, path)
    assert info.value.line == 4 and info.value.fix.startswith("valid keys are:")


@pytest.mark.parametrize(("text", "line", "pattern"), [
    ("genomes: [g.fa]\nout_dir: run\nseq_len: long\n", 3, "seq_len must be int, got 'long'"),
    ("genomes: [g.fa]\nout_dir: run\nstrategy: dp\n", 3, "strategy is 'dp', expected one of"),
    ("genomes: [g.fa]\nout_dir: run\nlogger: wandb\n", 3, "logger is 'wandb', expected one"),
    ("out_dir: run\ngenomes: [g.fa]\nbatch_size: 0\n", 3, "batch-size must be at least 1"),
    ("manifest: m.tsv\nout_dir: run\npreset: tiny\nclass_weights: {a: -1}\n", 4,
     r"class-weights\[a\] must be positive"),
])
def test_a_bad_value_names_the_file_and_line(tmp_path, text, line, pattern):
    path = _write(tmp_path, text)
    cls = FinetuneConfig if text.startswith("manifest") else PretrainConfig
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(cls, path)
    assert (info.value.path, info.value.line) == (str(path), line)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_a_flag_that_overrides_a_bad_file_value_is_not_blamed_on_the_file(tmp_path):
    path = _write(tmp_path, "genomes: [g.fa]\nout_dir: run\nbatch_size: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(PretrainConfig, path, {"batch_size": 0})
    assert info.value.path is None and "batch-size must be at least 1" in str(info.value)


def test_a_bad_saved_config_on_resume_names_config_yaml(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    text = dump_yaml(PretrainConfig(genomes=["g.fa"], out_dir=str(run)).to_dict())
    (run / "config.yaml").write_text(text.replace("max_steps: 2000", "max_steps: -3"))
    line = text.splitlines().index("max_steps: 2000") + 1
    with pytest.raises(ConfigError) as info:
        load_config(PretrainConfig, None, {"out_dir": str(run), "resume": True})
    assert (info.value.path, info.value.line) == (str(run / "config.yaml"), line)


def test_the_cli_prints_file_line_and_suggestion(tmp_path):
    from mambadna.cli import cli

    path = _write(tmp_path, "genomes: [g.fa]\nseq_len: 64\nbatchsize: 4\n")
    result = CliRunner().invoke(cli, ["pretrain", "--config", str(path), "-o",
                                      str(tmp_path / "run")])
    assert result.exit_code == 1
    assert f"error: {path}:3: unknown key(s) 'batchsize'" in result.output
    assert "did you mean batch_size?" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
