"""Atomic file writes: a saved result is either the old file or the complete new one, never half.

Every writer in the project goes through these helpers: write to a temporary file in the same
folder, flush and fsync it, then ``os.replace`` it over the target (atomic on POSIX). Files that
belong together (a training checkpoint, a study's report and figures) are written as one directory
with :func:`atomic_write_dir` and read back through :func:`recover_dir`. Finished files get the
permissions the umask gives (``mkstemp``'s 0600 is only for the temporary name).

The module lives in :mod:`languages` (beside :mod:`languages.cli`) because that is the one package
every other one imports: training, probing and the studies all save through it without depending
on each other.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the finished file onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_dir(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` to fill a fresh directory, then put it at ``path`` as one unit (see
    :class:`StagedDir`)."""
    with StagedDir(path) as staged:
        write(staged.dir)
    return Path(path)


class StagedDir:
    """A directory written as one unit: files go into ``dir`` (a fresh folder beside ``path``); on a
    clean exit of the ``with`` block the previous ``path`` (if any) is renamed aside to ``.NAME.old``
    and ``dir`` renamed into place. A kill between the two renames leaves the complete old directory,
    which :func:`recover_dir` puts back; an exception or a kill inside the block leaves ``path``
    untouched. ``final(p)`` is where a file written under ``dir`` ends up."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.dir: Path = self.path

    def __enter__(self) -> "StagedDir":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(self.path)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        os.chmod(self.dir, 0o777 & ~_umask())
        return self

    def final(self, p: str | os.PathLike) -> Path:
        return self.path / Path(p).relative_to(self.dir)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        try:
            old = _old_name(self.path)
            if old.exists():
                shutil.rmtree(old)
            if self.path.exists():
                os.replace(self.path, old)
            os.replace(self.dir, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            recover_dir(self.path)
            raise
        shutil.rmtree(_old_name(self.path), ignore_errors=True)


def recover_dir(path: str | os.PathLike) -> Path:
    """``path`` after an interrupted :func:`atomic_write_dir`: if the kill came between its two renames,
    the previous complete directory is moved back. Returns ``path``."""
    path = Path(path)
    old = _old_name(path)
    if not path.exists() and old.is_dir():
        os.replace(old, path)
    return path


def check_writable(path: str | os.PathLike, what: str = "--out") -> Path:
    """Raise ``PermissionError`` (naming ``what`` and the path) unless ``path`` is, or can be created
    as, a writable folder; creates nothing."""
    path = Path(path)
    if str(path).strip() == "":
        raise ValueError(f"{what} must name a folder, got an empty string")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(f"{what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: cannot write into {probe}")
    return path


def _old_name(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover (platforms without directory fds)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, _write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
