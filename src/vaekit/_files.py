"""File-mode helpers shared by the writers of models and checkpoints."""

from __future__ import annotations

import os
from pathlib import Path


def _proc_umask() -> int | None:
    """The process umask from ``/proc/self/status`` (Linux), or None where that is unreadable."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _probe_umask() -> int:
    """The umask read the only portable way, by setting it; done once, at import."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_proc_at_import = _proc_umask()
_IMPORT_UMASK: int = _probe_umask() if _proc_at_import is None else _proc_at_import


def follow_umask(path: str | os.PathLike[str]) -> None:
    """Gives a new file the mode a plain ``open(path, "w")`` would have: ``0o666 & ~umask``
    (directories: ``0o777 & ~umask``, as ``mkdir`` gives).

    ``tempfile.mkstemp``, ``tempfile.mkdtemp`` and ``safetensors.torch.save_file`` create files
    readable by their owner only (0600, 0700); saved models would then be unreadable to the
    rest of a group sharing a directory, unlike every other file the user writes.
    """
    umask = _proc_umask()
    if umask is None:  # no /proc: the umask as it was at import
        umask = _IMPORT_UMASK
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
