"""File-mode helpers shared by the writers of models and checkpoints."""

from __future__ import annotations

import os
from pathlib import Path


def _read_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # os.umask can only be read by setting it; done once, at import, before any threads of ours.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _read_umask()


def follow_umask(path: str | os.PathLike[str]) -> None:
    """Gives a new file the mode a plain ``open(path, "w")`` would have: ``0o666 & ~umask``
    (directories: ``0o777 & ~umask``, as ``mkdir`` gives).

    ``tempfile.mkstemp``, ``tempfile.mkdtemp`` and ``safetensors.torch.save_file`` create files
    readable by their owner only (0600, 0700); saved models would then be unreadable to the
    rest of a group sharing a directory, unlike every other file the user writes.
    """
    umask = _read_umask() if os.path.exists("/proc/self/status") else _IMPORT_UMASK
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
