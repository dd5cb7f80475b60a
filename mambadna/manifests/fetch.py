"""Download the files of a data manifest: resumable, retried, verified, renamed only when good.

For every entry: ``<dest>/<file>.part`` grows until the transfer is complete (an interrupted or
failed transfer resumes from its size with an HTTP ``Range`` request), the checksum is checked,
and only then is the part renamed to ``<dest>/<file>``. Files already present and matching
their checksum are skipped. Connection errors, timeouts and HTTP 5xx/429 are retried with
exponential backoff; HTTP 4xx (404 ...) fail at once with the URL in the message.

On a checksum mismatch the ``.part`` is deleted (its bytes cannot be trusted, and resuming it
would fail again) and ChecksumError is raised; nothing is renamed into place.

Expected checksums come from the manifest (``checksum``) or from the provider's checksum list
(``checksum_source``, e.g. UCSC ``md5sum.txt``) read at fetch time. Entries with neither are
downloaded only with ``allow_unverified``; their sha256 is then recorded (trust on first use).
``<dest>/.mambadna-fetch.json`` records what was verified, so ``verify_only`` works offline.

urllib only: no dependency beyond the standard library.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlparse

from mambadna._version import __version__
from mambadna.atomic import atomic_file, fsync_path
from mambadna.errors import ChecksumError, DownloadError, InputError, UnsafeFileError
from mambadna.manifests.genomes import Checksum, DataManifest, ManifestEntry, load_manifest

STATE_FILE = ".mambadna-fetch.json"
_RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}
_BSD = re.compile(r"^(MD5|SHA256)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)$")
_GNU = re.compile(r"^([0-9a-fA-F]{64}|[0-9a-fA-F]{32})\s+\*?(.+)$")
_TRANSIENT = (ConnectionError, TimeoutError, http.client.IncompleteRead,
              http.client.BadStatusLine)

Progress = Callable[[str, int, "int | None"], None]
"""progress(entry name, bytes done, total bytes or None); mambadna.progress.DownloadBars draws
it as one bar per file."""


@dataclass(frozen=True)
class FetchOptions:
    """How to download. ``backoff`` seconds double per retry, capped at ``max_backoff``."""

    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 60.0
    chunk_size: int = 1 << 20
    allow_unverified: bool = False


@dataclass(frozen=True)
class FetchResult:
    """What happened to one entry. status: downloaded, present, verified (fine); missing,
    mismatch, unverified (verify_only); failed (keep_going)."""

    name: str
    path: Path
    status: str
    checksum: str | None
    size: int | None
    error: str | None = None  # why it failed (status "failed", with keep_going)

    @property
    def ok(self) -> bool:
        return self.status in ("downloaded", "present", "verified")


# --- URLs and checksum lists --------------------------------------------------------------------

def resolve_url(url: str, base_url: str | None, manifest: Path | None = None) -> str:
    """An entry URL made absolute: URLs pass through; relative paths join ``base_url`` (a URL
    or a local folder)."""
    if urlparse(url).scheme:
        return url
    if not base_url:
        raise InputError(f"relative url {url!r} needs a base", path=manifest,
                         fix="set base_url in the manifest or pass --base-url")
    if urlparse(base_url).scheme in ("http", "https", "ftp", "file"):
        return urljoin(base_url.rstrip("/") + "/", url)
    return (Path(base_url).expanduser().resolve() / url).as_uri()


def parse_checksum_list(text: str) -> dict[str, Checksum]:
    """``md5sum``/``sha256sum`` output (``<hex>  <path>``, ``<hex> *<path>``) or BSD style
    (``MD5 (path) = <hex>``) -> {path without leading './': Checksum}."""
    found: dict[str, Checksum] = {}
    for raw in text.splitlines():
        line = raw.strip()
        bsd, gnu = _BSD.match(line), _GNU.match(line)
        if bsd:
            algorithm, path, digest = bsd.group(1).lower(), bsd.group(2), bsd.group(3)
        elif gnu:
            digest, path = gnu.group(1), gnu.group(2)
            algorithm = "md5" if len(digest) == 32 else "sha256"
        else:
            continue  # comments, blank lines, other digests
        try:
            found[path.strip().removeprefix("./")] = Checksum.parse(f"{algorithm}:{digest}")
        except ValueError:
            continue
    return found


def lookup_checksum(listing: dict[str, Checksum], list_url: str, file_url: str) -> Checksum | None:
    """The listed checksum of ``file_url``: by its path relative to the list's folder, else by
    its file name when that name is listed once."""
    list_dir = PurePosixPath(unquote(urlparse(list_url).path)).parent
    file_path = PurePosixPath(unquote(urlparse(file_url).path))
    try:
        relative = str(file_path.relative_to(list_dir))
    except ValueError:
        relative = None
    if relative in listing:
        return listing[relative]
    by_name = [c for path, c in listing.items() if PurePosixPath(path).name == file_path.name]
    return by_name[0] if len(by_name) == 1 else None


# --- transfer -----------------------------------------------------------------------------------

def _request(url: str, offset: int, timeout: float):
    headers = {"User-Agent": f"mambadna/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _total_size(response, offset: int) -> int | None:
    """Full file size from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def _transfer_once(url: str, part: Path, options: FetchOptions, name: str,
                   progress: Progress | None) -> bool:
    """One attempt: append to ``part`` from its current size. True when the file is complete."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _request(url, offset, options.timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the part may be complete
            return True
        raise
    with response:
        status = getattr(response, "status", 200)
        if offset and status != 206:  # the server ignored Range: start over
            offset = 0
        total = _total_size(response, offset)
        with open(part, "ab" if offset else "wb") as handle:
            done = offset
            while chunk := response.read(options.chunk_size):
                handle.write(chunk)
                done += len(chunk)
                if progress:
                    progress(name, done, total)
    if total is not None and done < total:
        raise http.client.IncompleteRead(b"", total - done)
    return True


def download(url: str, part: Path, options: FetchOptions, name: str = "",
             progress: Progress | None = None) -> None:
    """Fetch ``url`` into ``part`` (resuming), retrying transient failures with backoff."""
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(options.retries + 1):
        try:
            _transfer_once(url, part, options, name, progress)
            return
        except urllib.error.HTTPError as err:
            if err.code not in _RETRY_HTTP:
                raise DownloadError(f"HTTP {err.code} {err.reason} for {url}", record=name,
                                    fix="check the url in the manifest (or --base-url)") from None
            failure = f"HTTP {err.code}"
        except urllib.error.URLError as err:
            if isinstance(err.reason, FileNotFoundError | IsADirectoryError | PermissionError):
                raise DownloadError(f"cannot read {url}: {err.reason}", record=name,
                                    fix="check the url in the manifest (or --base-url)") from None
            failure = str(err.reason)
        except _TRANSIENT as err:
            failure = f"{type(err).__name__}: {err}"
        if attempt == options.retries:
            raise DownloadError(f"giving up on {url} after {options.retries + 1} attempts "
                                f"(last error: {failure})", record=name,
                                fix="run the same command again: it resumes from "
                                    f"{part.name}")
        time.sleep(min(options.max_backoff, options.backoff * 2**attempt))


def file_checksum(path: Path, algorithm: str, chunk_size: int = 1 << 22) -> Checksum:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return Checksum(algorithm, digest.hexdigest())


# --- state: what was verified -------------------------------------------------------------------

def _read_state(dest: Path) -> dict:
    try:
        return json.loads((dest / STATE_FILE).read_text()).get("entries", {})
    except (OSError, ValueError):
        return {}


def _write_state(dest: Path, entries: dict) -> None:
    with atomic_file(dest / STATE_FILE) as tmp:
        tmp.write_text(json.dumps({"format": 1, "entries": entries}, indent=2, sort_keys=True)
                       + "\n")


class _Checksums:
    """Expected checksums of entries: manifest value, recorded state, or the provider's list
    (each list downloaded once per run)."""

    def __init__(self, manifest: DataManifest, base_url: str | None, state: dict,
                 options: FetchOptions) -> None:
        self.manifest, self.base_url, self.state, self.options = manifest, base_url, state, options
        self.lists: dict[str, dict[str, Checksum]] = {}

    def source_url(self, entry: ManifestEntry) -> str | None:
        if entry.checksum_source is None:
            return None
        return resolve_url(entry.checksum_source, self.base_url, self.manifest.path)

    def expected(self, entry: ManifestEntry, url: str | None) -> Checksum | None:
        """The checksum ``entry`` must match, or None for an unverifiable entry. ``url`` None:
        the entry's URL cannot be resolved (verify without --base-url): use the record."""
        if entry.checksum is not None:
            return entry.checksum
        recorded = self.state.get(entry.name, {})
        if (recorded.get("file") == entry.file and recorded.get("checksum")
                and url in (None, recorded.get("url"))
                and (recorded.get("verified") or entry.checksum_source is None)):
            return Checksum.parse(recorded["checksum"])
        if url is None:
            raise InputError(f"no recorded checksum for {entry.file}, and its relative url "
                             f"{entry.url!r} needs a base", path=self.manifest.path,
                             record=entry.name, fix="pass --base-url")
        source = self.source_url(entry)
        if source is None:
            return None
        if source not in self.lists:
            self.lists[source] = parse_checksum_list(self._read(source, entry.name))
        found = lookup_checksum(self.lists[source], source, url)
        if found is None:
            raise ChecksumError(f"{source} lists no checksum for {url}", record=entry.name,
                                path=self.manifest.path, line=entry.line,
                                fix="correct checksum_source or give checksum in the manifest")
        return found

    def _read(self, url: str, name: str) -> str:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            part = Path(tmp) / "list"
            download(url, part, self.options, name=f"{name} (checksum list)")
            return part.read_text(errors="replace")


# --- the manifest -------------------------------------------------------------------------------

def _stays_inside(dest: Path, target: Path, part: Path, name: str) -> None:
    """Refuse links that would take a download out of --dest: a .part that is a symbolic link
    (appending to it writes wherever it points), or a folder on the way that resolves outside
    --dest. (A linked target is fine: it is only read, and os.replace replaces the link.)"""
    fix = "remove the link and run again: downloads only write inside --dest"
    if part.is_symlink():
        raise UnsafeFileError(f"is a symbolic link (to {os.readlink(part)}); refusing to "
                              "write through it", path=part, record=name, fix=fix)
    root = dest.resolve()
    if not target.parent.resolve().is_relative_to(root):
        raise UnsafeFileError(f"leads outside --dest {dest} (through a linked folder)",
                              path=target.parent, record=name, fix=fix)


def _fetch_entry(entry: ManifestEntry, dest: Path, sums: _Checksums, state: dict,
                 options: FetchOptions, progress: Progress | None) -> FetchResult:
    url = resolve_url(entry.url, sums.base_url, sums.manifest.path)
    target, part = dest / entry.file, dest / f"{entry.file}.part"
    _stays_inside(dest, target, part, entry.name)
    expected = sums.expected(entry, url)
    if expected is None and not options.allow_unverified:
        raise ChecksumError(
            "no checksum and no checksum_source: the download could not be verified",
            path=sums.manifest.path, line=entry.line, record=entry.name,
            fix="add a checksum to the manifest, or pass --allow-unverified to download it "
                "and record its sha256 (trust on first use)")
    if target.exists() and expected is not None:
        if file_checksum(target, expected.algorithm) == expected:
            return FetchResult(entry.name, target, "present", str(expected),
                               target.stat().st_size)
    elif target.exists():
        return FetchResult(entry.name, target, "present", None, target.stat().st_size)
    download(url, part, options, entry.name, progress)
    size = part.stat().st_size
    if entry.size is not None and size != entry.size:
        part.unlink()
        raise ChecksumError(f"downloaded {size} bytes, the manifest says {entry.size}",
                            path=sums.manifest.path, line=entry.line, record=entry.name,
                            fix="the file changed upstream or the manifest is wrong; "
                                "check the url and size")
    got = file_checksum(part, expected.algorithm if expected else "sha256")
    if expected is not None and got != expected:
        part.unlink()  # never resume from bytes that failed verification
        raise ChecksumError(f"checksum mismatch for {url}: expected {expected}, got {got}",
                            path=sums.manifest.path, line=entry.line, record=entry.name,
                            fix="run again to download afresh; if it persists the file "
                                "changed upstream: check the manifest")
    # Not mambadna.atomic: the .part outlives failures on purpose (the next run resumes it).
    fsync_path(part)
    os.replace(part, target)
    state[entry.name] = {"file": entry.file, "url": url, "checksum": str(got),
                         "size": size, "verified": expected is not None}
    _write_state(dest, state)
    return FetchResult(entry.name, target, "downloaded", str(got), size)


def _verify_entry(entry: ManifestEntry, dest: Path, sums: _Checksums) -> FetchResult:
    relative = not urlparse(entry.url).scheme and not sums.base_url
    url = None if relative else resolve_url(entry.url, sums.base_url, sums.manifest.path)
    target = dest / entry.file
    if not target.exists():
        return FetchResult(entry.name, target, "missing", None, None)
    expected = sums.expected(entry, url)
    if expected is None:
        return FetchResult(entry.name, target, "unverified", None, target.stat().st_size)
    got = file_checksum(target, expected.algorithm)
    status = "verified" if got == expected else "mismatch"
    return FetchResult(entry.name, target, status, str(got), target.stat().st_size)


def fetch_manifest(manifest: str | Path | DataManifest, dest: str | Path, *,
                   only: list[str] | tuple[str, ...] | None = None, verify_only: bool = False,
                   base_url: str | None = None, options: FetchOptions | None = None,
                   progress: Progress | None = None,
                   keep_going: bool = False) -> list[FetchResult]:
    """Download (or with ``verify_only`` re-check) the manifest's entries into ``dest``.

    Returns one FetchResult per selected entry. Raises DownloadError (HTTP 4xx, retries
    exhausted), ChecksumError (mismatch, no checksum without allow_unverified) or InputError
    (bad manifest). ``base_url`` overrides the manifest's for relative URLs. With
    ``keep_going`` a failing entry becomes a "failed" result and the others still run.
    """
    options = options or FetchOptions()
    if not isinstance(manifest, DataManifest):
        manifest = load_manifest(manifest)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    state = _read_state(dest)
    sums = _Checksums(manifest, base_url or manifest.base_url, state, options)
    results = []
    for entry in manifest.select(only):
        if verify_only:
            results.append(_verify_entry(entry, dest, sums))
            continue
        try:
            results.append(_fetch_entry(entry, dest, sums, state, options, progress))
        except (DownloadError, ChecksumError) as err:
            if not keep_going:
                raise
            results.append(FetchResult(entry.name, dest / entry.file, "failed", None, None,
                                       error=str(err)))
    return results

