"""Received files on disk: a temporary file is fsynced and renamed into place before the index is written,
so a file the index names is always complete. Runs on the association thread (blocking I/O is fine there)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Final

from gateways.dicom.status import BadDataset

_UID: Final = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def check_uid(value: str, name: str) -> str:
    value = value.strip().rstrip("\x00")
    if not value or len(value) > 64 or not _UID.match(value):
        raise BadDataset(f"{name} {value[:40]!r} is not a valid UID")
    return value


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """``<root>/<2 hex of the study UID's hash>/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` and derived files."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)

    def study_dir(self, study_uid: str) -> Path:
        bucket = hashlib.sha1(study_uid.encode()).hexdigest()[:2]
        return self.root / bucket / study_uid

    def instance_path(self, study_uid: str, sop_uid: str) -> Path:
        return self.study_dir(study_uid) / f"{sop_uid}.dcm"

    def place(self, received: Path, final: Path, *, synced: bool = False, sync_dir: bool = True) -> int:
        """Move a received temporary file to ``final`` durably (fsync file, rename, fsync directory); a copy
        through a temporary file in the store when the two are on different filesystems. Returns its size.
        ``synced``: the received file is fsynced already; with ``sync_dir`` False the caller fsyncs
        ``final.parent`` (once for many files) before indexing."""
        final.parent.mkdir(parents=True, exist_ok=True)
        if not synced:
            fsync_file(received)
        try:
            os.replace(received, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy_into(received, final)
        if sync_dir:
            fsync_dir(final.parent)
        return final.stat().st_size

    def _copy_into(self, source: Path, final: Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_bytes(self, final: Path, data: bytes) -> None:
        """A derived file (ECG SVG/JSON) written atomically."""
        self.write_derived(final, data)

    @staticmethod
    def write_derived(final: Path, data: bytes) -> None:
        """A derived file written atomically (temporary file, fsync, rename)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def remove(*paths: Path | str | None) -> None:
        for path in paths:
            if path:
                Path(path).unlink(missing_ok=True)
