"""Domain errors: what went wrong, where (file, record, line, position) and how to fix it.

Every error a user can cause by their input is one of these. They subclass the builtin a caller
would expect (ValueError for bad content, OSError for files that cannot be opened), so generic
``except ValueError`` code keeps working, and the CLI prints them as ``file:line: message``.
"""

from __future__ import annotations

import os


class MambaDNAError(Exception):
    """Base class. ``str(err)`` reads ``path:line: record 'r', position p: message. Fix: ...``."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | None = None,
        record: str | None = None,
        line: int | None = None,
        position: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.record = record
        self.line = line
        self.position = position
        self.fix = fix
        super().__init__(str(self))

    def location(self) -> str:
        """``path:line`` (or ``path`` or empty), the prefix compilers and editors understand."""
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    def __str__(self) -> str:
        parts = []
        where = self.location()
        if where:
            parts.append(f"{where}: ")
        inside = []
        if self.record is not None:
            inside.append(f"record {self.record!r}")
        if self.position is not None:
            inside.append(f"position {self.position} (0-based)")
        if inside:
            parts.append(", ".join(inside) + ": ")
        parts.append(self.message)
        if self.fix:
            parts.append(f". Fix: {self.fix}")
        return "".join(parts)

    def with_location(self, **where) -> MambaDNAError:
        """Fill in location fields that are still unknown (readers know more than encoders)."""
        for key, value in where.items():
            if getattr(self, key, None) is None and value is not None:
                setattr(self, key, os.fspath(value) if key == "path" else value)
        self.args = (str(self),)
        return self


class InputError(MambaDNAError, ValueError):
    """The content of an input is not what it must be."""


class AlphabetError(InputError):
    """A sequence holds a character that is not a base under the chosen policy."""


class FormatError(InputError):
    """A file is not valid FASTA/FASTQ/SAM/BAM/CRAM (or is truncated)."""


class DuplicateRecordError(InputError):
    """Two records share a name where names must be unique."""


class InputFileError(MambaDNAError, OSError):
    """A path cannot be read: missing, a directory, unreadable, or of an unknown kind."""


class IndexRequiredError(InputError):
    """Random access or a region query needs an index the file does not have."""


class OutputExistsError(MambaDNAError, FileExistsError):
    """An output already exists and ``--force`` was not given."""


class ConfigError(MambaDNAError, ValueError):
    """A configuration value, preset or option combination is invalid."""


class ModelFileError(MambaDNAError, ValueError):
    """A saved model directory is missing a file, is corrupt, or does not match its config."""


class DownloadError(MambaDNAError, OSError):
    """A download failed: HTTP error (404, ...), or the connection kept failing after retries."""


class ChecksumError(InputError):
    """A file's checksum does not match its manifest, or no checksum could be found for it."""


class UnsafeFileError(InputError):
    """A file would run code when loaded (a pickle naming Python callables), or a path would
    lead outside the folder it must stay in; it is refused, never loaded or followed."""


class OutputError(MambaDNAError, OSError):
    """An output cannot be written: the disk (or quota) is full, the filesystem is read-only,
    or the location is not writable. Raised by the atomic writers (mambadna.atomic), which
    leave nothing half-written behind."""

    FULL = (28, 122, 27)  # ENOSPC, EDQUOT (Linux), EFBIG: no room for the data
    READ_ONLY = (30,)  # EROFS
    DENIED = (13, 1)  # EACCES, EPERM: only when the failing path is the output's

    @staticmethod
    def errno_of(err: OSError) -> int | None:
        """The errno of ``err``; pyarrow's OSErrors carry it only in the text ("[errno 28]")."""
        if err.errno is not None:
            return err.errno
        import re

        found = re.search(r"\[errno (\d+)\]", str(err), re.IGNORECASE)
        return int(found.group(1)) if found else None

    @classmethod
    def from_os_error(cls, err: OSError, path: str | os.PathLike | None = None,
                      *, denied: bool = False) -> OutputError | None:
        """The domain error for a failed write of ``path`` (default: the error's own file),
        or None if ``err`` is not a write failure. denied: count EACCES/EPERM too (the
        caller knows the failing path is an output)."""
        number = cls.errno_of(err)
        target = path if path is not None else err.filename
        where = os.path.dirname(os.fspath(target)) if target is not None else None
        where = where or "."
        if number in cls.FULL:
            return cls(f"cannot write: {err.strerror or 'no space left on device'} "
                       "(nothing was left half-written)", path=target,
                       fix=f"free space on that filesystem (`df -h {where}`), or write the "
                           "output to another location")
        if number in cls.READ_ONLY:
            return cls("cannot write: the filesystem is read-only", path=target,
                       fix="choose an output location on a writable filesystem")
        if number in cls.DENIED and denied:
            return cls(f"cannot write: {err.strerror or 'permission denied'}", path=target,
                       fix=f"make {where} writable for you, or choose another output location")
        return None
