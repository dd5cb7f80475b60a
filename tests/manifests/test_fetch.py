"""mambadna data fetch against an HTTP server the test runs on 127.0.0.1 (no network).

The server supports Range requests and can cut a transfer mid-body, answer 5xx a number of
times, or ignore Range, so resume, retry and verification paths all run for real.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from mambadna.cli import cli
from mambadna.errors import ChecksumError, DownloadError
from mambadna.manifests.fetch import FetchOptions, fetch_manifest, parse_checksum_list

FAST = FetchOptions(retries=3, backoff=0.01, timeout=10, chunk_size=4096)
GENOME = (b">chr1\n" + b"ACGT" * 5000 + b"\n") * 3  # 60 kB, several chunks


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        if server.errors.get(self.path, 0) > 0:
            server.errors[self.path] -= 1
            self.send_error(503, "try later")
            return
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404, "no such file")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and self.path not in server.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if server.cuts.get(self.path, 0) > 0:  # promise the whole body, send half, hang up
            server.cuts[self.path] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.errors, httpd.cuts, httpd.ignore_range = {}, {}, {}, set()
    httpd.log = []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_manifest(tmp_path: Path, entries: list[dict], base_url: str | None = None) -> Path:
    lines = ["schema_version: 1", "name: test", "description: served by the test",
             f"base_url: {base_url or 'null'}", "entries:"]
    for entry in entries:
        fields = {"species": "Homo sapiens", "taxid": 9606, "assembly": "test",
                  "checksum": None, "compression": "none", "size": None, "label": "human",
                  "split": None, "license": "test data", **entry}
        lines.append(f"  - name: {fields.pop('name')}")
        for key, value in fields.items():
            lines.append(f"    {key}: {'null' if value is None else value}")
    path = tmp_path / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_download_verify_and_skip(server, tmp_path):
    server.files["/g/genome.fa"] = GENOME
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/g/genome.fa",
                                          "checksum": sha256(GENOME)}])
    dest = tmp_path / "dest"
    (result,) = fetch_manifest(manifest, dest, options=FAST)
    assert result.status == "downloaded" and result.checksum == sha256(GENOME)
    assert (dest / "genome.fa").read_bytes() == GENOME
    assert not (dest / "genome.fa.part").exists()
    requests = len(server.log)
    (again,) = fetch_manifest(manifest, dest, options=FAST)
    assert again.status == "present" and len(server.log) == requests  # nothing downloaded
    (check,) = fetch_manifest(manifest, dest, verify_only=True)
    assert check.status == "verified"


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    server.files["/genome.fa"] = GENOME
    server.cuts["/genome.fa"] = 1
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/genome.fa",
                                          "checksum": sha256(GENOME)}])
    (result,) = fetch_manifest(manifest, tmp_path / "d", options=FAST)
    assert result.status == "downloaded"
    assert (tmp_path / "d/genome.fa").read_bytes() == GENOME
    assert server.log == [("/genome.fa", None), ("/genome.fa", f"bytes={len(GENOME) // 2}-")]


def test_part_left_by_an_earlier_run_is_resumed(server, tmp_path):
    server.files["/genome.fa"] = GENOME
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "genome.fa.part").write_bytes(GENOME[:1000])
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/genome.fa",
                                          "checksum": sha256(GENOME)}])
    fetch_manifest(manifest, dest, options=FAST)
    assert server.log == [("/genome.fa", "bytes=1000-")]
    assert (dest / "genome.fa").read_bytes() == GENOME


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.files["/genome.fa"] = GENOME
    server.ignore_range.add("/genome.fa")
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "genome.fa.part").write_bytes(b"stale bytes")
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/genome.fa",
                                          "checksum": sha256(GENOME)}])
    fetch_manifest(manifest, dest, options=FAST)
    assert (dest / "genome.fa").read_bytes() == GENOME


def test_wrong_checksum_fails_and_leaves_nothing(server, tmp_path):
    server.files["/genome.fa"] = GENOME
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/genome.fa",
                                          "checksum": sha256(b"something else")}])
    with pytest.raises(ChecksumError, match="checksum mismatch") as info:
        fetch_manifest(manifest, tmp_path / "d", options=FAST)
    assert info.value.record == "g" and info.value.line == 6
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == []


def test_size_mismatch_is_an_error(server, tmp_path):
    server.files["/genome.fa"] = GENOME
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/genome.fa",
                                          "checksum": sha256(GENOME), "size": 12}])
    with pytest.raises(ChecksumError, match="manifest says 12"):
        fetch_manifest(manifest, tmp_path / "d", options=FAST)
    assert not (tmp_path / "d/genome.fa").exists()


def test_404_fails_at_once(server, tmp_path):
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/missing.fa",
                                          "checksum": sha256(GENOME)}])
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_manifest(manifest, tmp_path / "d", options=FAST)
    assert len(server.log) == 1  # no retries on a client error


def test_5xx_is_retried_then_given_up(server, tmp_path):
    server.files["/genome.fa"] = GENOME
    server.errors["/genome.fa"] = 2
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/genome.fa",
                                          "checksum": sha256(GENOME)}])
    (result,) = fetch_manifest(manifest, tmp_path / "d", options=FAST)
    assert result.status == "downloaded" and len(server.log) == 3
    server.errors["/genome.fa"] = 10
    (tmp_path / "d/genome.fa").unlink()
    with pytest.raises(DownloadError, match=r"giving up .* after 4 attempts"):
        fetch_manifest(manifest, tmp_path / "d", options=FAST)


def test_checksum_from_provider_list(server, tmp_path):
    md5 = hashlib.md5(GENOME).hexdigest()
    server.files["/asm/sub/chr1.fa"] = GENOME
    server.files["/asm/sub/chr2.fa"] = GENOME
    server.files["/asm/md5checksums.txt"] = f"{md5}  ./sub/chr1.fa\n".encode()
    source = f"{server.url}/asm/md5checksums.txt"
    manifest = write_manifest(tmp_path, [
        {"name": "one", "url": f"{server.url}/asm/sub/chr1.fa", "checksum_source": source},
        {"name": "two", "url": f"{server.url}/asm/sub/chr2.fa", "checksum_source": source}])
    (one,) = fetch_manifest(manifest, tmp_path / "d", only=["one"], options=FAST)
    assert one.checksum == f"md5:{md5}"
    with pytest.raises(ChecksumError, match="lists no checksum"):
        fetch_manifest(manifest, tmp_path / "d", only=["two"], options=FAST)
    results = fetch_manifest(manifest, tmp_path / "d", options=FAST, keep_going=True)
    assert [r.status for r in results] == ["present", "failed"]


def test_unverifiable_needs_opt_in_then_trusts_first_download(server, tmp_path):
    server.files["/genome.fa"] = GENOME
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/genome.fa"}])
    dest = tmp_path / "d"
    with pytest.raises(ChecksumError, match="allow-unverified"):
        fetch_manifest(manifest, dest, options=FAST)
    opt_in = FetchOptions(retries=1, backoff=0.01, allow_unverified=True)
    (result,) = fetch_manifest(manifest, dest, options=opt_in)
    assert result.status == "downloaded" and result.checksum == sha256(GENOME)
    assert fetch_manifest(manifest, dest, verify_only=True)[0].status == "verified"
    (dest / "genome.fa").write_bytes(GENOME[:-1])
    assert fetch_manifest(manifest, dest, verify_only=True)[0].status == "mismatch"


def test_relative_urls_from_a_local_folder(tmp_path):
    source = tmp_path / "sim"
    source.mkdir()
    (source / "human.fa").write_bytes(GENOME)
    (source / "SHA256SUMS").write_text(f"{hashlib.sha256(GENOME).hexdigest()}  human.fa\n")
    manifest = write_manifest(tmp_path, [{"name": "human", "url": "human.fa",
                                          "checksum_source": "SHA256SUMS"}])
    (result,) = fetch_manifest(manifest, tmp_path / "d", base_url=str(source), options=FAST)
    assert result.status == "downloaded"
    assert (tmp_path / "d/human.fa").read_bytes() == GENOME
    # verify works offline, without the base, from the recorded checksum
    assert fetch_manifest(manifest, tmp_path / "d", verify_only=True)[0].status == "verified"


def test_parse_checksum_lists():
    md5, sha = "0" * 31 + "a", "b" * 64
    text = (f"# comment\n{md5}  ./dir/a.fa.gz\n{sha} *b.fa\nMD5 (c.fa) = {md5}\n"
            f"SHA256 (d e.fa) = {sha}\nnot a checksum line\n")
    found = parse_checksum_list(text)
    assert {k: str(v) for k, v in found.items()} == {
        "dir/a.fa.gz": f"md5:{md5}", "b.fa": f"sha256:{sha}", "c.fa": f"md5:{md5}",
        "d e.fa": f"sha256:{sha}"}


def test_cli_fetch_and_verify(server, tmp_path):
    server.files["/genome.fa"] = GENOME
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/genome.fa",
                                          "checksum": sha256(GENOME)}])
    runner = CliRunner()
    dest = tmp_path / "d"
    first = runner.invoke(cli, ["data", "fetch", str(manifest), "--dest", str(dest), "--quiet"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("downloaded")
    verify = runner.invoke(cli, ["data", "fetch", str(manifest), "--dest", str(dest), "--verify"])
    assert verify.exit_code == 0 and verify.output.startswith("verified")
    (dest / "genome.fa").write_bytes(b"corrupt")
    bad = runner.invoke(cli, ["data", "fetch", str(manifest), "--dest", str(dest), "--verify"])
    assert bad.exit_code == 1 and "mismatch" in bad.output
    missing = runner.invoke(cli, ["data", "fetch", str(manifest), "--dest", str(dest),
                                  "--only", "nope"])
    assert missing.exit_code == 1 and "no entries named" in missing.output


def test_a_linked_part_or_folder_never_leads_outside_dest(server, tmp_path):
    from mambadna.errors import UnsafeFileError

    server.files["/g/genome.fa"] = GENOME
    manifest = write_manifest(tmp_path, [{"name": "g", "url": f"{server.url}/g/genome.fa",
                                          "checksum": sha256(GENOME), "file": "sub/genome.fa"}])
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    (dest / "sub").mkdir(parents=True)
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    (dest / "sub" / "genome.fa.part").symlink_to(victim)
    with pytest.raises(UnsafeFileError, match="symbolic link") as info:
        fetch_manifest(manifest, dest, options=FAST)
    assert "remove the link" in info.value.fix
    (dest / "sub" / "genome.fa.part").unlink()
    (dest / "sub").rmdir()
    (dest / "sub").symlink_to(outside)  # a linked folder on the way out
    with pytest.raises(UnsafeFileError, match="leads outside --dest"):
        fetch_manifest(manifest, dest, options=FAST)
    assert victim.read_text() == "keep me" and sorted(p.name for p in outside.iterdir()) == [
        "victim.txt"]
    assert server.log == []  # refused before any request


@pytest.mark.parametrize("file, message", [
    (".", "names a folder"), ("'sub/'", "names a folder"), ("'{0}.fa'", r"placeholder \{0\}"),
    ("'{name}.fa'", r"placeholder \{name\}"), ("'x{.fa'", "unbalanced braces"),
])
def test_bad_file_fields_are_refused_when_the_manifest_is_read(tmp_path, file, message):
    from mambadna.errors import InputError
    from mambadna.manifests import load_manifest

    manifest = write_manifest(tmp_path, [{"name": "g", "url": "https://x.org/genome.fa",
                                          "checksum": sha256(GENOME), "file": file}])
    with pytest.raises(InputError, match=message) as info:
        load_manifest(manifest)
    assert info.value.record == "g" and info.value.line is not None
    result = CliRunner().invoke(cli, ["data", "check", str(manifest)])
    assert result.exit_code == 1 and "Traceback" not in result.output
