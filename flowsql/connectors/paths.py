"""Opening files safely: the names a sink may not take, and opening under file roots.

Two rules (DESIGN §8):

1. A sink never writes a file that Python or a shell would load or run on its
   own: a name ending in one of :data:`REFUSED_SUFFIXES` (any case; trailing
   dots and spaces ignored) or starting with ``.`` is refused whatever the
   ``format`` says, and so is any path inside the flowsql package or the
   Python environment (:func:`environment_dirs`).
2. Given file roots (the job server), a path is checked again when the file is
   opened, not only when the job is deployed: it is resolved, must lie under a
   root, and is then opened one directory at a time from ``/`` with
   ``O_NOFOLLOW``. A directory swapped for a symlink after the check makes the
   open fail instead of escaping the root. A sink's temporary file is created,
   renamed and deleted relative to that directory handle, which is checked
   again (where the OS tells) before the rename.

Without roots (the CLI) paths are opened as given, symlinks followed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import site
import stat
import sys
import sysconfig
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from flowsql.errors import ConfigError, ConnectorError

#: Directories a job may use; None = no confinement (the CLI).
Roots = tuple[Path, ...] | None

#: Final suffixes of files that Python imports or loads (modules, bytecode,
#: extensions, path hooks, archives), that a shell or OS runs, or that a
#: desktop starts.
REFUSED_SUFFIXES = frozenset(
    {
        # Python: modules, bytecode, extensions, .pth path hooks, importable archives
        ".py", ".pyw", ".pyc", ".pyo", ".pyd", ".pyz", ".pyzw", ".pth",
        ".egg", ".whl", ".zip",
        # native code
        ".so", ".dylib", ".dll", ".exe", ".com", ".scr", ".msi", ".jar",
        # scripts
        ".sh", ".bash", ".zsh", ".ksh", ".csh", ".fish", ".command", ".bat", ".cmd",
        ".ps1", ".psm1", ".vbs", ".js", ".pl", ".rb", ".php", ".cgi", ".desktop",
    }
)  # fmt: skip
_VERSIONED_LIBRARY = re.compile(r"\.so(\.\d+)+$")
_ALLOWED_NAME = (
    "a file name not starting with '.' and not ending in "
    + ", ".join(sorted(REFUSED_SUFFIXES))
    + " (nor .so.N), outside the flowsql package and the Python environment"
)
#: Flags of the directories walked: O_PATH needs no read permission (Linux).
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def check_sink_path(path: str | os.PathLike[str], *, key: str = "path") -> None:
    """Refuse a sink path that Python or a shell could run (rule 1 above).

    Raises:
        ConfigError: naming ``key``, the path and what is allowed.
    """
    name = Path(path).name.rstrip(". ").lower()
    suffix = os.path.splitext(name)[1]
    if (
        not name
        or name.startswith(".")
        or suffix in REFUSED_SUFFIXES
        or _VERSIONED_LIBRARY.search(name)
    ):
        raise ConfigError(key, str(path), _ALLOWED_NAME)
    resolved = Path(os.path.realpath(Path(path).expanduser()))
    for directory in environment_dirs():
        if _under(resolved, directory):
            raise ConfigError(
                key,
                str(path),
                f"a path outside the flowsql package and the Python environment ({directory})",
            )


@functools.cache
def environment_dirs() -> tuple[Path, ...]:
    """The flowsql package and the Python environment: prefixes, the standard
    library, site-packages (the user's too) and the scripts directory."""
    dirs = [
        Path(__file__).resolve().parents[1],
        *(Path(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)),
        *(Path(p) for p in site.getsitepackages()),
        Path(site.getusersitepackages()),
    ]
    for name in ("stdlib", "platstdlib", "purelib", "platlib", "scripts"):
        if name in sysconfig.get_path_names():
            dirs.append(Path(sysconfig.get_path(name)))
    resolved = {Path(os.path.realpath(d)) for d in dirs}
    return tuple(sorted(d for d in resolved if d != Path(d.anchor)))


def _under(path: Path, directory: Path) -> bool:
    return path == directory or path.is_relative_to(directory)


class Directory:
    """An open directory, for creating, renaming and deleting files in it.

    With ``roots`` it is reached from ``/`` one component at a time without
    following symlinks, after its resolved path was checked to lie under a root.

    Args:
        path: the directory.
        roots: the directories allowed; None = no confinement.
        what: what the directory is for, in errors ("output directory").
    """

    def __init__(self, path: Path, roots: Roots = None, *, what: str = "directory") -> None:
        self.path = path
        self.roots = roots
        self.what = what
        if roots is None:
            self.fd = _open_or_fail(str(path), _DIR_FLAGS, what=what)
        else:
            self.path = confined(path, roots, what=what)
            self.fd = _walk(self.path, what=what)

    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        """A file descriptor for ``name`` in this directory (with roots, never
        through a symlink)."""
        nofollow = 0 if self.roots is None else _NOFOLLOW
        return os.open(name, flags | nofollow | os.O_CLOEXEC, mode, dir_fd=self.fd)

    def replace(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target`` within this directory."""
        os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def check_still_confined(self) -> None:
        """Fail if the directory was moved out of every root since it was opened
        (checked where the OS names an open directory: Linux ``/proc``)."""
        if self.roots is None:
            return
        try:
            now = Path(os.readlink(f"/proc/self/fd/{self.fd}"))
        except OSError:
            return
        if not any(_under(now, root) for root in self.roots):
            raise ConnectorError(f"{self.what} {self.path} moved outside the file roots ({now})")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def confined(path: Path, roots: tuple[Path, ...], *, what: str = "file") -> Path:
    """``path`` resolved now (symlinks followed); it must lie under a root.

    Raises:
        ConnectorError: it does not (checked when the file is opened, so the
            job fails with this reason even if the path passed at deploy).
    """
    resolved = Path(os.path.realpath(path.expanduser()))
    if not any(_under(resolved, Path(os.path.realpath(root))) for root in roots):
        allowed = ", ".join(str(r) for r in roots) or "(none)"
        raise ConnectorError(
            f"{what} {path} resolves to {resolved}, outside the file roots {allowed}"
            " (changed since the job was deployed?)"
        )
    return resolved


def open_readable(path: Path, roots: Roots = None) -> BinaryIO:
    """Open an input file for reading; with ``roots``, checked as the module says."""
    if roots is None:
        return path.open("rb")
    return os.fdopen(_confined_fd(path, roots), "rb")


def arrow_readable(path: Path, roots: Roots = None) -> str | pa.NativeFile:
    """What to hand pyarrow's readers: the path, or with ``roots`` the checked
    file itself (reopened through ``/dev/fd``, so no path is looked up again)."""
    if roots is None:
        return str(path)
    fd = _confined_fd(path, roots)
    try:
        return pa.OSFile(f"/dev/fd/{fd}")
    finally:
        os.close(fd)


def _confined_fd(path: Path, roots: tuple[Path, ...]) -> int:
    resolved = confined(path, roots, what="input file")
    directory = Directory(resolved.parent, roots, what="input directory")
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = _open_or_fail(
            resolved.name, os.O_RDONLY | os.O_NONBLOCK, what="input file", at=directory
        )
    finally:
        directory.close()
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConnectorError(f"input {path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def _walk(resolved: Path, *, what: str) -> int:
    """A descriptor of ``resolved`` (absolute, symlinks resolved) opened from ``/``
    one component at a time with ``O_NOFOLLOW``: a component that became a
    symlink (or stopped being a directory) fails the open."""
    fd = os.open(resolved.anchor, _DIR_FLAGS)
    try:
        for part in resolved.parts[1:]:
            child = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError as exc:
        os.close(fd)
        raise _walk_error(resolved, what, exc) from None
    return fd


def _walk_error(path: Path, what: str, exc: OSError) -> ConnectorError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return ConnectorError(
            f"{what} {path}: part of the path is now a symlink (replaced after it was"
            " checked against the file roots?); refusing to follow it"
        )
    return ConnectorError(f"{what} {path}: {exc.strerror or exc}")


def _open_or_fail(name: str, flags: int, *, what: str, at: Directory | None = None) -> int:
    try:
        if at is None:
            return os.open(name, flags | os.O_CLOEXEC)
        return at.open(name, flags)
    except FileNotFoundError:
        where = at.path / name if at is not None else name
        raise ConnectorError(f"{what} does not exist: {where}") from None
    except OSError as exc:
        where = at.path / name if at is not None else Path(name)
        raise _walk_error(where, what, exc) from None
