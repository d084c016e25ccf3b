"""Checkpoints that never lose work: atomic, checksummed, pickle-free.

A checkpoint is a directory ``output_dir/checkpoints/step-XXXXXXXX/`` holding

- ``config.json`` + ``model.safetensors``: the model, loadable with ``from_pretrained``;
- ``train_state.safetensors``: every tensor of the training state (optimizer moments, RNG
  states, ...), and ``train_state.json``: everything else (step, epoch, history, the
  ``TrainConfig``, scheduler and loss-scaler state, where each tensor goes);
- ``manifest.json``, written last: the sha256 of every other file.

It is written into a hidden temporary directory, every file is fsynced, and the directory is
renamed into place, so a process killed at any moment leaves either the complete checkpoint
or none. A checkpoint whose files do not match its manifest is skipped on resume, with a
warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vaekit._files import follow_umask

__all__ = [
    "FORMAT_VERSION",
    "OutputDirLockedError",
    "RunLock",
    "decode_state",
    "encode_state",
    "find_latest_checkpoint",
    "list_checkpoints",
    "read_checkpoint",
    "verify_checkpoint",
    "write_checkpoint",
    "write_model_dir",
    "write_model_files",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
LOCK_NAME = ".vaekit.lock"


# --------------------------------------------------------------------------------------------
# One run per output_dir.
# --------------------------------------------------------------------------------------------


class OutputDirLockedError(RuntimeError):
    """Another live training run holds the lock of the same ``output_dir``."""


class RunLock:
    """An exclusive lock on a run's ``output_dir``, held while a Trainer writes into it.

    The lock is an ``flock`` on ``output_dir/.vaekit.lock``, which holds the pid of its owner
    (for the error message only). The kernel releases it when the process exits, however it
    exits (SIGKILL included), so a lock left by a dead run never blocks a new one: there is no
    stale-lock state to clean up. On systems without ``fcntl`` (Windows) nothing is locked.
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises :class:`OutputDirLockedError` naming the pid holding it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            logger.debug("no fcntl here: %s is not locked", self.path.parent)
            return
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            except OSError:
                holder = "unknown"
            os.close(fd)
            raise OutputDirLockedError(
                f"output_dir {str(self.path.parent)!r} is in use by another training run (pid "
                f"{holder}, lock {str(self.path)!r}); two runs writing into one directory would "
                "corrupt each other's checkpoints. Wait for that run to finish, stop it, or "
                "choose another output_dir"
            ) from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Releases the lock (the file stays: unlinking it would race with a new owner)."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# Durable file writes.
# --------------------------------------------------------------------------------------------


def _fsync_path(path: Path) -> None:
    """fsyncs a file or a directory (directories only where the OS allows it)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes a file so that readers see the old or the new content, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        follow_umask(tmp)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------------------------
# Nested state (optimizer, scheduler, RNG, ...) as safetensors + JSON, never pickle.
# --------------------------------------------------------------------------------------------


def encode_state(obj: Any, tensors: dict[str, Tensor], prefix: str) -> Any:
    """Turns nested state into JSON, moving every tensor into ``tensors``.

    Tensors become ``{"__tensor__": key}``, tuples ``{"__tuple__": [...]}``, dicts with
    non-string keys ``{"__dict__": [[key, value], ...]}``; :func:`decode_state` inverts it.
    """
    if isinstance(obj, Tensor):
        key = prefix
        if key in tensors:
            raise ValueError(f"duplicate state key {key!r}")
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode_state(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {
            "__dict__": [
                [
                    encode_state(k, tensors, f"{prefix}.k{i}"),
                    encode_state(v, tensors, f"{prefix}.{k}"),
                ]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    # NumPy scalars and arrays (the NumPy RNG state) become plain Python values.
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return {"__ndarray__": tolist(), "dtype": str(getattr(obj, "dtype", ""))}
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def decode_state(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`encode_state`."""
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(decode_state(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__dict__"}:
            return {decode_state(k, tensors): decode_state(v, tensors) for k, v in obj["__dict__"]}
        if set(obj) == {"__ndarray__", "dtype"}:
            import numpy as np

            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"] or None)
        return {k: decode_state(v, tensors) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------------
# Model files in the save_pretrained layout.
# --------------------------------------------------------------------------------------------


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """``config.json`` content as ``save_pretrained`` writes it: the architecture, the
    ``model_type``, the format version and (informative) the vaekit version."""
    from vaekit import __version__

    config = model.config.to_dict()  # type: ignore[union-attr,operator]
    return {
        "model_type": model.model_type,
        "format_version": FORMAT_VERSION,
        "vaekit_version": __version__,
        **config,
    }


def _model_tensors(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def write_model_files(model: nn.Module, directory: Path, atomic: bool = False) -> None:
    """Writes ``model.safetensors`` and ``config.json`` into ``directory``.

    The layout is the one ``save_pretrained`` uses, so ``from_pretrained(directory)`` loads it
    (for registered model classes). With ``atomic=True`` each file is replaced atomically
    (weights first, config last).
    """
    directory.mkdir(parents=True, exist_ok=True)
    tensors = _model_tensors(model)
    metadata = {"format": "pt"}
    if atomic:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            follow_umask(tmp)  # mkstemp and safetensors create 0600
            _fsync_path(Path(tmp))
            os.replace(tmp, directory / MODEL_WEIGHTS)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        atomic_write_bytes(directory / MODEL_CONFIG, _json_bytes(model_config_dict(model)))
        return
    save_file(tensors, directory / MODEL_WEIGHTS, metadata=metadata)
    follow_umask(directory / MODEL_WEIGHTS)
    _fsync_path(directory / MODEL_WEIGHTS)
    _write_bytes(directory / MODEL_CONFIG, _json_bytes(model_config_dict(model)))


def _replace_dir(tmp: Path, target: Path) -> None:
    """Moves a finished temporary directory to ``target``, replacing what is there."""
    if target.exists():
        trash = target.with_name(f".{target.name}.old-{os.getpid()}")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(target, trash)
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)
    _fsync_path(target.parent)


def write_model_dir(
    write: Callable[[Path], Any], target: Path, extra: dict[str, Any] | None = None
) -> Path:
    """Atomically replaces ``target`` with a directory filled by ``write(tmp_dir)`` (and
    ``extra`` JSON files), so readers never see a half-written model."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    follow_umask(tmp)  # mkdtemp creates 0700
    try:
        write(tmp)
        for name, content in (extra or {}).items():
            _write_bytes(tmp / name, _json_bytes(content))
        _fsync_path(tmp)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --------------------------------------------------------------------------------------------
# Training checkpoints.
# --------------------------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def write_checkpoint(
    checkpoints_dir: Path,
    step: int,
    model: nn.Module,
    state: dict[str, Any],
    keep_last: int,
    protect: Callable[[Path], bool] | None = None,
) -> Path:
    """Atomically writes ``checkpoints_dir/step-XXXXXXXX`` and prunes old checkpoints.

    Args:
        checkpoints_dir: the ``checkpoints`` directory (created if needed).
        step: the optimisation step the state belongs to.
        model: the (unwrapped) model.
        state: nested training state; tensors go to safetensors, the rest to JSON.
        keep_last: number of checkpoints to keep, newest first.
        protect: optional predicate of checkpoints that must not be pruned.

    Returns:
        The checkpoint directory.
    """
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    for stale in checkpoints_dir.glob(".step-*.tmp-*"):  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    target = checkpoints_dir / checkpoint_name(step)

    def fill(tmp: Path) -> None:
        write_model_files(model, tmp)
        tensors: dict[str, Tensor] = {}
        encoded = encode_state(state, tensors, "state")
        save_file(tensors, tmp / STATE_TENSORS, metadata={"format": "pt"})
        follow_umask(tmp / STATE_TENSORS)
        _fsync_path(tmp / STATE_TENSORS)
        _write_bytes(tmp / STATE_JSON, _json_bytes(encoded))
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "files": {name: _sha256(tmp / name) for name in files},
        }
        _write_bytes(tmp / MANIFEST, _json_bytes(manifest))

    write_model_dir(fill, target)  # same temporary name, fsync and replace as a model directory
    prune_checkpoints(checkpoints_dir, keep_last, protect)
    return target


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Checkpoint directories in ``checkpoints_dir``, oldest first (not verified)."""
    if not checkpoints_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in checkpoints_dir.iterdir()
        if p.is_dir() and (m := _STEP_DIR.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def prune_checkpoints(
    checkpoints_dir: Path, keep_last: int, protect: Callable[[Path], bool] | None = None
) -> None:
    """Deletes all but the newest ``keep_last`` checkpoints."""
    old = list_checkpoints(checkpoints_dir)[:-keep_last]
    for path in old:
        if protect is not None and protect(path):
            continue
        shutil.rmtree(path, ignore_errors=True)


def verify_checkpoint(path: Path) -> str | None:
    """Checks a checkpoint against its manifest; returns what is wrong, or None if it is good."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "it has no manifest.json (it was not completely written)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its manifest.json is unreadable ({err})"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"it has format_version {manifest.get('format_version')!r}, not {FORMAT_VERSION}"
    for required in (MODEL_CONFIG, MODEL_WEIGHTS, STATE_TENSORS, STATE_JSON):
        if required not in files:
            return f"its manifest does not list {required}"
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if _sha256(file) != digest:
            return f"{name} does not match its sha256 in manifest.json (truncated or corrupted)"
    return None


def find_latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint that passes :func:`verify_checkpoint`.

    Args:
        root: a run's ``output_dir``, its ``checkpoints`` directory, or one checkpoint.

    Returns:
        The checkpoint directory, or None when there is no valid checkpoint. Each invalid
        checkpoint skipped on the way is reported with a logged warning.
    """
    root = Path(root)
    if _STEP_DIR.match(root.name) and (root / MANIFEST).exists():
        candidates = [root]
    elif (root / "checkpoints").is_dir():
        candidates = list_checkpoints(root / "checkpoints")
    else:
        candidates = list_checkpoints(root)
    for path in reversed(candidates):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        logger.warning("skipping checkpoint %s: %s", path, problem)
    return None


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Any]]:
    """Reads a verified checkpoint: (model config.json, model weights, training state)."""
    model_config = json.loads((path / MODEL_CONFIG).read_text())
    weights = load_file(path / MODEL_WEIGHTS)
    tensors = load_file(path / STATE_TENSORS)
    state = decode_state(json.loads((path / STATE_JSON).read_text()), tensors)
    return model_config, weights, state
