"""Hostile files: what ``from_pretrained`` does with files crafted to hurt it.

Threats: a model directory or Hub repo whose ``model.safetensors`` has a malformed header, a
pickle in disguise, tensors of the wrong dtype or shape or extra ones; a ``config.json`` with
wrong types, unknown keys, absurd nesting or sizes (10^12 parameters); a Hub that loops,
stalls or sends more bytes than it declared. Outcome for every one: a ``HubLoadError``
subclass (``IntegrityError``, ``WeightsMismatchError``, ``IncompatibleConfigError``,
``UnsafeWeightsError``, ``HubDownloadError``) with a message that names the file, raised
within a few seconds, with no code run from the file and no weights loaded silently.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import signal
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import constants as hf_constants
from robust_helpers import state_equal, tiny_model
from safetensors.torch import save_file

import vaekit
from vaekit.hub import (
    HubDownloadError,
    HubLoadError,
    IncompatibleConfigError,
    IntegrityError,
    UnsafeWeightsError,
    WeightsMismatchError,
)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fails the test if the block runs longer than ``seconds`` (a hang is a failure)."""

    def expire(signum: int, frame: Any) -> None:
        raise AssertionError(f"did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, vaekit.MLPVAE]:
    model = tiny_model()
    return model.save_pretrained(tmp_path / "model"), model


def load(path: Path, **kwargs: Any) -> vaekit.VAE:
    with time_limit(20):
        return vaekit.AutoVAE.from_pretrained(path, **kwargs)


# ---- malformed safetensors ------------------------------------------------------------------


def _header(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _write(path: Path, header: dict[str, Any] | bytes, body: bytes) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def _first_key(header: dict[str, Any]) -> str:
    return next(k for k in header if k != "__metadata__")


def _bad_length_prefix(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(data) * 10) + data[8:])


def _huge_length_prefix(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 2**63) + path.read_bytes()[8:])


def _invalid_json(path: Path) -> None:
    _, body = _header(path)
    _write(path, b"{not json" + b" " * 20, body)


def _offsets_out_of_range(path: Path) -> None:
    header, body = _header(path)
    key = _first_key(header)
    start, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [start, end + 10**9]
    _write(path, header, body)


def _offsets_inconsistent_with_shape(path: Path) -> None:
    header, body = _header(path)
    key = _first_key(header)
    header[key]["shape"] = [10**6]  # the offsets still cover the old, smaller tensor
    _write(path, header, body)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


MALFORMED = {
    "bad_length_prefix": _bad_length_prefix,
    "huge_length_prefix": _huge_length_prefix,
    "invalid_json_header": _invalid_json,
    "offsets_out_of_range": _offsets_out_of_range,
    "offsets_inconsistent_with_shape": _offsets_inconsistent_with_shape,
    "truncated_body": _truncated,
    "empty_file": _empty,
}


@pytest.mark.parametrize("damage", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_safetensors_is_refused(saved: tuple[Path, Any], damage: Any) -> None:
    """Threat: a weights file whose header lies (length, JSON, offsets) makes the reader read
    out of bounds, allocate wildly or hang. Outcome: IntegrityError naming the file."""
    path, _ = saved
    damage(path / "model.safetensors")
    with pytest.raises(IntegrityError, match=r"model\.safetensors.*not a valid safetensors"):
        load(path)


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: proof that a loader ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pickle_disguised_as_safetensors_runs_no_code(saved: tuple[Path, Any]) -> None:
    """Threat: a pickle named model.safetensors (or a pickle-only repo) runs code when loaded.
    Outcome: refused; the payload's marker file is never created."""
    path, _ = saved
    marker = path.parent / "pwned"
    (path / "model.safetensors").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    with pytest.raises(IntegrityError):
        load(path)
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    with pytest.raises(UnsafeWeightsError, match="safetensors only"):
        load(path)
    assert not marker.exists()


def _retyped(tensors: dict[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    out = dict(tensors)
    out[key] = out[key].to(torch.int32)
    return out


def test_dtype_shape_and_extra_tensors_are_never_loaded_silently(saved: tuple[Path, Any]) -> None:
    """Threat: weights of the wrong dtype or shape, or extra/missing tensors, load into a model
    that then computes garbage. Outcome: WeightsMismatchError naming each key; with
    strict=False the extra tensors are ignored (logged) and the real weights load bit-exactly,
    but a dtype or shape mismatch is refused even then."""
    path, model = saved
    weights = path / "model.safetensors"
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(k for k, v in tensors.items() if v.is_floating_point())

    save_file(_retyped(tensors, key), weights)
    for strict in (True, False):
        with pytest.raises(WeightsMismatchError, match=rf"dtype of {key}: file I32"):
            load(path, strict=strict)

    wrong_shape = dict(tensors, **{key: torch.zeros(*tensors[key].shape, 2)})
    save_file(wrong_shape, weights)
    with pytest.raises(WeightsMismatchError, match=rf"shape of {key}"):
        load(path, strict=False)

    save_file(dict(tensors, **{"evil.extra": torch.ones(3)}), weights)
    with pytest.raises(WeightsMismatchError, match=r"not in the model: evil\.extra"):
        load(path)
    assert state_equal(load(path, strict=False).state_dict(), model.state_dict())

    save_file({k: v for k, v in tensors.items() if k != key}, weights)
    with pytest.raises(WeightsMismatchError, match=rf"missing from the file: {key}"):
        load(path)


# ---- hostile config.json --------------------------------------------------------------------

BAD_CONFIGS: dict[str, dict[str, Any]] = {
    "latent_dim_string": {"latent_dim": "8"},
    "latent_dim_bool": {"latent_dim": True},
    "latent_dim_negative": {"latent_dim": -3},
    "latent_dim_float": {"latent_dim": 2.5},
    "input_shape_string": {"input_shape": "1,4,4"},
    "input_shape_2d": {"input_shape": [4, 4]},
    "input_shape_zero": {"input_shape": [1, 0, 4]},
    "hidden_dims_float": {"hidden_dims": [1.5]},
    "hidden_dims_object": {"hidden_dims": {"a": 1}},
    "dropout_string": {"dropout": "0.1"},
    "dropout_one": {"dropout": 1.0},
    "num_classes_bool": {"num_classes": True},
    "norm_unknown": {"norm": "weird"},
    "activation_unknown": {"activation": "os.system"},
    "likelihood_unknown": {"likelihood": "__import__('os')"},
    "likelihood_kwargs_list": {"likelihood_kwargs": [1, 2]},
    "likelihood_kwargs_unknown": {"likelihood_kwargs": {"exec": "print(1)"}},
    "unknown_key": {"__class__": "subprocess.Popen"},
    "model_type_unknown": {"model_type": "builtins.eval"},
    "model_type_missing": {"model_type": None},
    "format_version_future": {"format_version": 999},
    "latent_dim_1e12": {"latent_dim": 10**12},
    "hidden_dims_1e6_wide": {"hidden_dims": [10**6, 10**6]},
    "hidden_dims_100k_long": {"hidden_dims": [4] * 100_000},
    "latent_dim_2e62": {"latent_dim": 2**62},
}


@pytest.mark.parametrize("patch", BAD_CONFIGS.values(), ids=list(BAD_CONFIGS))
def test_hostile_config_is_refused_before_allocating(
    saved: tuple[Path, Any], patch: dict[str, Any]
) -> None:
    """Threat: a config.json with wrong types, unknown keys or absurd sizes makes the loader
    crash with an unrelated exception, build a model of 10^12 parameters (allocating
    terabytes), or spin for hours on 100k layers. Outcome: IncompatibleConfigError (a
    ValueError) naming config.json, within the time limit; model.safetensors is not read."""
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    config.update(patch)
    config = {k: v for k, v in config.items() if v is not None or k != "model_type"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(b"never read")  # would be an IntegrityError
    with pytest.raises(IncompatibleConfigError, match=r"config\.json|model_type|format version"):
        load(path)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, " " * (2 << 20) + "{}"],
    ids=["deep_list", "deep_object", "two_megabytes"],
)
def test_config_nesting_and_size_bombs_are_refused(saved: tuple[Path, Any], text: str) -> None:
    """Threat: a config.json nested 100k deep (RecursionError escaped the loader before this
    suite) or megabytes long. Outcome: IncompatibleConfigError."""
    path, _ = saved
    (path / "config.json").write_text(text)
    with pytest.raises(IncompatibleConfigError, match=r"config\.json"):
        load(path)


def test_parameter_limit_is_an_argument(saved: tuple[Path, Any]) -> None:
    """The parameter limit counts what the config describes (on the meta device) and can be
    raised or turned off for a file the user trusts."""
    path, model = saved
    count = sum(t.numel() for t in model.state_dict().values())
    with pytest.raises(IncompatibleConfigError, match=f"{count:,} parameters"):
        load(path, max_parameters=count - 1)
    assert state_equal(load(path, max_parameters=count).state_dict(), model.state_dict())
    assert state_equal(load(path, max_parameters=None).state_dict(), model.state_dict())
    with pytest.raises(TypeError, match="max_parameters"):
        load(path, max_parameters="many")


# ---- a hostile Hub -----------------------------------------------------------------------


def _upload(hub: Any, repo_id: str, directory: Path) -> None:
    hub.add_repo(repo_id, {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()})


def test_hub_config_for_a_huge_model_never_downloads_the_weights(hub: Any, saved: Any) -> None:
    """Threat: a Hub repo whose config.json asks for 10^12 parameters and whose weights file is
    huge. Outcome: refused from the config alone; model.safetensors is never requested."""
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(dict(config, latent_dim=10**12)))
    _upload(hub, "evil/huge", path)
    hub.clear_requests()
    with time_limit(30), pytest.raises(IncompatibleConfigError, match="max_parameters"):
        vaekit.AutoVAE.from_pretrained("evil/huge")
    assert not [r for r in hub.requests if r.path.endswith("model.safetensors")]


@pytest.mark.parametrize("fault", ["redirect_loop", "slow", "oversize", "corrupt"])
def test_hostile_hub_downloads_fail_fast(
    hub: Any, saved: Any, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threat: a Hub (or a man in the middle) that redirects forever, stalls the body, sends
    more bytes than it declared, or serves altered bytes under the right headers. Outcome: a
    HubLoadError within the time limit; nothing is loaded and no partial file is kept as
    valid (a second, offline load does not find a model)."""
    path, _ = saved
    _upload(hub, "evil/repo", path)
    monkeypatch.setattr(hf_constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.5)
    hub.inject_fault("evil/repo", "model.safetensors", fault, delay=30.0)  # type: ignore[arg-type]
    with time_limit(30), pytest.raises((HubDownloadError, IntegrityError)) as info:
        vaekit.AutoVAE.from_pretrained("evil/repo")
    assert isinstance(info.value, HubLoadError) and "model.safetensors" in str(info.value)
    hub.clear_faults()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with time_limit(30), pytest.raises(HubLoadError):
        vaekit.AutoVAE.from_pretrained("evil/repo")
