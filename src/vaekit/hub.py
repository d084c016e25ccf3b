"""Save, load and share models: ``config.json`` + ``model.safetensors`` + ``README.md``.

A saved model is a directory (or a Hugging Face Hub repo) with three files:

- ``config.json``: ``model.config.to_dict()`` plus ``model_type`` (which class to build),
  ``format_version`` (of this layout) and ``vaekit_version`` (informative);
- ``model.safetensors``: the ``state_dict``, including learned likelihood parameters;
- ``README.md``: a model card (YAML metadata for the Hub and a human-readable body).

Loading is strict and never unpickles anything: a repo with only ``pytorch_model.bin`` is
refused, the weights must match the architecture key by key, shape by shape, and files
downloaded from the Hub are checked against the checksums the Hub advertises.

Example:
    >>> import tempfile, torch, vaekit
    >>> from vaekit.hub import AutoVAE
    >>> model = vaekit.MLPVAE(input_shape=(4,), latent_dim=2, hidden_dims=(8,))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = model.save_pretrained(tmp)
    ...     again = AutoVAE.from_pretrained(tmp)
    >>> all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
    ...                                          again.state_dict().values()))
    True
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData, hf_hub_download
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors
from huggingface_hub.file_download import repo_folder_name
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vaekit._files import follow_umask
from vaekit.models.base import VAE, get_model_class

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "MAX_PARAMETERS",
    "MODEL_CARD_NAME",
    "WEIGHTS_NAME",
    "AutoVAE",
    "HubAccessError",
    "HubDownloadError",
    "HubLoadError",
    "IncompatibleConfigError",
    "IntegrityError",
    "ModelNotFoundError",
    "UnsafeWeightsError",
    "WeightsMismatchError",
    "load_pretrained",
    "push_to_hub",
    "save_pretrained",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"
#: Version of the saved layout. Bump it when an older vaekit could not read new files correctly.
FORMAT_VERSION = 1
# Loading refuses configs describing bigger models unless max_parameters says otherwise: a
# hostile config.json must not make from_pretrained allocate terabytes before any check.
MAX_PARAMETERS = 1_000_000_000
_MAX_CONFIG_BYTES = 1 << 20  # a vaekit config.json is well under a kilobyte
_MAX_CONFIG_ITEMS = 256  # entries of one list (hidden_dims, channels): layers are built one by one
_METADATA_KEYS = ("model_type", "format_version", "vaekit_version")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

M = TypeVar("M", bound=VAE)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class HubLoadError(Exception):
    """Base class of the errors raised when a model cannot be loaded (or pushed)."""


class ModelNotFoundError(HubLoadError, FileNotFoundError):
    """No such directory, repo, revision or file, or not in the cache while offline."""


class HubAccessError(HubLoadError, PermissionError):
    """The Hub refused access: a private or gated repo and no (valid) token."""


class HubDownloadError(HubLoadError, ConnectionError):
    """The download failed: network trouble, time-outs, redirect loops, wrong sizes."""


class IntegrityError(HubLoadError):
    """A file does not match its advertised checksum, or is not a valid safetensors file."""


class UnsafeWeightsError(HubLoadError):
    """Only pickled weights (e.g. ``pytorch_model.bin``) are available; vaekit never unpickles."""


class IncompatibleConfigError(HubLoadError, ValueError):
    """``config.json`` is invalid, newer than this vaekit, or for another model class."""


class WeightsMismatchError(HubLoadError, ValueError):
    """The weights file does not match the architecture of its config.

    Attributes:
        missing_keys: weights the model has but the file lacks.
        unexpected_keys: weights in the file that the model does not have.
        shape_mismatches: ``(key, shape in file, shape in model)``.
        dtype_mismatches: ``(key, dtype in file, dtype in model)``.
    """

    def __init__(
        self,
        message: str,
        *,
        missing_keys: Sequence[str] = (),
        unexpected_keys: Sequence[str] = (),
        shape_mismatches: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
        dtype_mismatches: Sequence[tuple[str, str, str]] = (),
    ):
        super().__init__(message)
        self.missing_keys = list(missing_keys)
        self.unexpected_keys = list(unexpected_keys)
        self.shape_mismatches = list(shape_mismatches)
        self.dtype_mismatches = list(dtype_mismatches)


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception bases of the HTTP clients huggingface_hub may use (httpx2, httpx, requests)."""
    bases: list[type[BaseException]] = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError")):
        with contextlib.suppress(ImportError, AttributeError):
            bases.append(getattr(__import__(module), name))
    try:
        import requests

        bases.append(requests.RequestException)
    except ImportError:
        pass
    return tuple(bases)


_NETWORK_ERRORS = _network_errors()
# huggingface_hub < 1.0 has no RemoteEntryNotFoundError; its EntryNotFoundError is the remote one.
_REMOTE_ENTRY_NOT_FOUND: type[Exception] = getattr(
    hf_errors, "RemoteEntryNotFoundError", hf_errors.EntryNotFoundError
)
_LISTING_ERRORS: tuple[type[BaseException], ...] = (
    hf_errors.HfHubHTTPError,
    OSError,
    *_NETWORK_ERRORS,
)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_pretrained(
    model: VAE,
    save_directory: str | os.PathLike[str],
    *,
    model_card: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``config.json``, ``model.safetensors`` and ``README.md`` to a directory.

    Args:
        model: any registered :class:`~vaekit.VAE` (its ``model_type`` is stored).
        save_directory: created if needed; files already there with other names are kept.
        model_card: optional facts for ``README.md``: ``license`` (e.g. ``"apache-2.0"``),
            ``datasets`` (names or Hub ids), ``metrics`` (``{"nll": 80.2, ...}``, nats unless
            the name says otherwise), ``training`` (``{"epochs": 10, ...}``), ``description``,
            ``tags``, ``base_model`` (the repo a fine-tune started from) and ``repo_id`` (for
            the usage snippet).

    Returns:
        The directory, as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, vaekit
        >>> model = vaekit.MLPVAE(input_shape=(4,), latent_dim=2, hidden_dims=(8,))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     sorted(p.name for p in model.save_pretrained(tmp).iterdir())
        ['README.md', 'config.json', 'model.safetensors']
    """
    if not isinstance(model, VAE):
        raise TypeError(f"save_pretrained needs a vaekit.VAE, got {type(model).__name__}")
    _check_registered(type(model))
    card_facts = _check_model_card(model_card)
    directory = Path(save_directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)

    config_text = _config_json(model)
    # Saved tensors are contiguous CPU copies: safetensors refuses views and shared storage.
    tensors = {
        key: value.detach().to(device="cpu", copy=True).contiguous()
        for key, value in model.state_dict().items()
    }
    card = _model_card(model, card_facts)

    _write_atomic(directory / CONFIG_NAME, lambda tmp: tmp.write_text(config_text, "utf-8"))
    _write_atomic(
        directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"})
    )
    _write_atomic(directory / MODEL_CARD_NAME, lambda tmp: tmp.write_text(str(card), "utf-8"))
    logger.info("saved %s to %s", type(model).__name__, directory)
    return directory


def _check_registered(cls: type[VAE]) -> None:
    """A saved model must load back as the same class, so its model_type must map to it."""
    name = cls.__name__
    try:
        registered = get_model_class(cls.model_type) if cls.model_type else None
    except ValueError:
        registered = None
    if registered is cls:
        return
    if registered is None:
        raise ValueError(
            f"{name} (model_type {cls.model_type!r}) is not registered, so it could not be "
            "loaded back; give it a unique model_type and decorate it with "
            "@vaekit.register_model"
        )
    raise ValueError(
        f"{name} shares model_type {cls.model_type!r} with {registered.__name__}, so it would "
        f"load back as a {registered.__name__}; give {name} its own model_type and decorate it "
        "with @vaekit.register_model"
    )


def _config_json(model: VAE) -> str:
    from vaekit import __version__

    config = model.config.to_dict()
    clash = sorted(set(config) & set(_METADATA_KEYS))
    if clash:
        raise ValueError(f"config fields {clash} clash with the keys vaekit adds to config.json")
    payload = {
        "model_type": type(model).model_type,
        "format_version": FORMAT_VERSION,
        "vaekit_version": __version__,
        **config,
    }
    try:
        return json.dumps(payload, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"the config of this {type(model).__name__} cannot be stored as JSON ({err}); "
            "keep likelihood_kwargs and other config values to numbers, strings, lists and dicts"
        ) from err


def _write_atomic(path: Path, write: Any) -> None:
    """Writes via a temporary file in the same directory, so a crash leaves no half file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        follow_umask(tmp)  # safetensors writes 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------

_CARD_KEYS = (
    "base_model",
    "datasets",
    "description",
    "license",
    "metrics",
    "repo_id",
    "tags",
    "training",
)

_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{% if description %}{{ description }}

{% endif %}A variational autoencoder of class `{{ model_class }}` \
(`model_type: {{ model_type }}`), saved with \
[vaekit](https://vaekit.readthedocs.io) {{ vaekit_version }}.

## Architecture

| Setting | Value |
|---|---|
{% for name, value in architecture_rows %}| {{ name }} | {{ value }} |
{% endfor %}
## Likelihood

p(x|z) is `{{ likelihood }}`{% if likelihood_kwargs %} with `{{ likelihood_kwargs }}`{% endif %}.
Log-likelihoods and the ELBO are reported in nats per example.

## Training data

{% if dataset_list %}{% for name in dataset_list %}- {{ name }}
{% endfor %}{% else %}Not recorded.
{% endif %}{% if training_rows %}
## Training

| Setting | Value |
|---|---|
{% for name, value in training_rows %}| {{ name }} | {{ value }} |
{% endfor %}{% endif %}
## Metrics

{% if metric_rows %}| Metric | Value |
|---|---|
{% for name, value in metric_rows %}| {{ name }} | {{ value }} |
{% endfor %}{% else %}Not recorded.
{% endif %}
## Usage

```python
import vaekit

model = vaekit.AutoVAE.from_pretrained("{{ load_name }}")  # a {{ model_class }}, in eval mode
x = model.sample({{ sample_args }})  # (16, {{ input_shape }})
```

## Files

- `config.json`: the architecture (`model_type`, format version {{ format_version }}).
- `model.safetensors`: the weights, safetensors only (loading never unpickles anything).
"""


def _check_model_card(model_card: Mapping[str, Any] | None) -> dict[str, Any]:
    if model_card is None:
        return {}
    if not isinstance(model_card, Mapping):
        raise TypeError(f"model_card must be a dict, got {type(model_card).__name__}")
    unknown = sorted(set(model_card) - set(_CARD_KEYS))
    if unknown:
        raise ValueError(f"unknown model_card keys {unknown}; valid keys are {list(_CARD_KEYS)}")
    facts = dict(model_card)
    for key in ("datasets", "tags", "base_model"):
        if isinstance(facts.get(key), str):
            facts[key] = [facts[key]]
    for key in ("datasets", "tags", "base_model"):
        value = facts.get(key)
        if value is not None and not (
            isinstance(value, Sequence) and all(isinstance(v, str) for v in value)
        ):
            raise TypeError(
                f"model_card[{key!r}] must be a string or a list of strings, got {value!r}"
            )
    for key in ("metrics", "training"):
        value = facts.get(key)
        if value is not None and not (
            isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
        ):
            raise TypeError(f"model_card[{key!r}] must be a dict with string keys, got {value!r}")
    for name, value in (facts.get("metrics") or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"metric {name!r} must be a number, got {value!r}")
    for key in ("license", "description", "repo_id"):
        value = facts.get(key)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"model_card[{key!r}] must be a string, got {value!r}")
    return facts


def _cell(value: Any) -> str:
    """A value for a Markdown table cell."""
    if isinstance(value, float):
        text = f"{value:.6g}" if math.isfinite(value) else str(value)
    elif isinstance(value, (tuple, list)):
        text = f"`{tuple(value)}`" if isinstance(value, tuple) else f"`{value}`"
    elif value is None:
        text = "none"
    elif isinstance(value, dict):
        text = f"`{json.dumps(value)}`" if value else "`{}`"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _model_card(model: VAE, facts: Mapping[str, Any]) -> ModelCard:
    from vaekit import __version__

    config = model.config
    model_type = type(model).model_type
    tags = list(dict.fromkeys(["vaekit", "vae", model_type, *facts.get("tags", [])]))
    metrics = facts.get("metrics") or {}
    card_data = ModelCardData(
        library_name="vaekit",
        tags=tags,
        license=facts.get("license"),
        datasets=facts.get("datasets") or None,
        metrics=list(metrics) or None,
        base_model=facts.get("base_model") or None,
        # Machine-readable copy of the tables, so that cards can be checked by tests.
        vaekit={"metrics": dict(metrics), "training": dict(facts.get("training") or {})}
        if metrics
        else None,
    )
    config_dict = config.to_dict()
    architecture_rows = [("Class", f"`{type(model).__name__}`")]
    architecture_rows += [
        (name, _cell(getattr(config, name)))
        for name in config_dict
        if name not in ("likelihood", "likelihood_kwargs")
    ]
    architecture_rows.append(("Parameters", f"{sum(p.numel() for p in model.parameters()):,}"))
    repo_id = facts.get("repo_id")
    return ModelCard.from_template(
        card_data,
        template_str=_CARD_TEMPLATE,
        title=repo_id.split("/")[-1] if repo_id else f"{type(model).__name__} ({model_type})",
        description=facts.get("description"),
        model_class=type(model).__name__,
        model_type=model_type,
        vaekit_version=__version__,
        architecture_rows=architecture_rows,
        likelihood=config.likelihood,
        likelihood_kwargs=json.dumps(config.likelihood_kwargs) if config.likelihood_kwargs else "",
        dataset_list=facts.get("datasets") or [],
        training_rows=[(k, _cell(v)) for k, v in (facts.get("training") or {}).items()],
        metric_rows=[(k, _cell(v)) for k, v in metrics.items()],
        load_name=repo_id or "path/to/saved-model",
        input_shape=", ".join(map(str, config.input_shape)),
        sample_args="16" if config.num_classes is None else "16, y=0",
        format_version=FORMAT_VERSION,
    )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


class AutoVAE:
    """Loads any registered VAE, choosing the class from ``config.json``'s ``model_type``.

    Example:
        >>> import tempfile, vaekit
        >>> from vaekit.hub import AutoVAE
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     model = vaekit.ConvVAE(input_shape=(1, 8, 8), latent_dim=2, channels=(4,))
        ...     _ = model.save_pretrained(tmp)
        ...     type(AutoVAE.from_pretrained(tmp)).__name__
        'ConvVAE'
    """

    def __init__(self) -> None:
        raise TypeError(
            "AutoVAE only loads saved models: use AutoVAE.from_pretrained(name_or_path), "
            "or build a concrete class such as vaekit.MLPVAE(...)"
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], **kwargs: Any) -> VAE:
        """Same arguments as :func:`load_pretrained`; returns an instance of the saved class."""
        return load_pretrained(cls, name_or_path, **kwargs)


def load_pretrained(
    cls: type[M] | type[AutoVAE],
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    strict: bool = True,
    max_parameters: int | None = MAX_PARAMETERS,
) -> Any:
    """Loads a model saved by :func:`save_pretrained` from a directory or a Hub repo.

    Three plain steps: read ``config.json`` and check it, build the model, load
    ``model.safetensors`` into it after comparing every key, shape and dtype.

    Args:
        cls: the expected class. A concrete class refuses a config of another ``model_type``
            (unless that type's registered class is a subclass of ``cls``); :class:`AutoVAE`
            or :class:`~vaekit.VAE` take whatever class the config names.
        name_or_path: a local directory, or a Hub repo id such as ``"user/my-vae"``. Anything
            starting with ``./``, ``../``, ``/`` or ``~``, a :class:`~pathlib.Path`, or an
            existing directory is a path and never sent to the Hub.
        revision: branch, tag or commit sha on the Hub (default ``"main"``). The weights are
            fetched at the commit the config came from, so the two always match.
        cache_dir: Hub cache directory (default: huggingface_hub's, ``HF_HUB_CACHE``).
        force_download: download again even if cached.
        local_files_only: use the cache only (as ``HF_HUB_OFFLINE=1`` does).
        token: Hub token for private or gated repos (default: the one ``hf auth login`` saved).
        subfolder: the model lives in this folder of the directory or repo.
        device: where to put the model: ``None`` (CPU), ``"auto"`` (the accelerator if any),
            or any ``torch.device`` spec.
        dtype: floating dtype for the parameters (e.g. ``torch.float64``). ``None`` keeps the
            precision the weights were saved in.
        strict: with ``False``, weights missing from the file keep their fresh initialisation
            and extra weights in the file are ignored (both are logged). Shape and dtype
            mismatches are refused either way.
        max_parameters: refuse a ``config.json`` describing a model with more parameters
            than this (counted on the meta device, before anything is allocated or the weights
            are downloaded), or with lists of more than 256 layers. ``None`` turns both checks
            off, for a file you trust.

    Returns:
        The model, in eval mode, on ``device``.

    Raises:
        ModelNotFoundError: no such directory, repo, revision or file, or not cached offline.
        HubAccessError: a private or gated repo without a valid token.
        HubDownloadError: the download failed (network, time-out, size mismatch).
        IntegrityError: a downloaded file's checksum differs from the Hub's, or the weights
            file is not valid safetensors.
        UnsafeWeightsError: the only weights are pickled (``pytorch_model.bin`` and kin).
        IncompatibleConfigError: invalid ``config.json``, a newer ``format_version``, or a
            config for another class.
        WeightsMismatchError: the weights do not match the architecture.
    """
    if not (isinstance(cls, type) and (cls is AutoVAE or issubclass(cls, VAE))):
        raise TypeError(f"load_pretrained needs a VAE subclass or AutoVAE, got {cls!r}")
    target_device = _resolve_device(device)
    target_dtype = _resolve_dtype(dtype)
    if subfolder is not None and (not isinstance(subfolder, str) or subfolder.startswith("/")):
        raise ValueError(f"subfolder must be a relative path inside the model, got {subfolder!r}")
    subfolder = subfolder or None

    source: _Source
    if _looks_like_path(name_or_path):
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} only applies to Hub repos, but {str(name_or_path)!r} is a "
                "local path; check out that revision yourself or pass a repo id"
            )
        source = _LocalSource(Path(name_or_path).expanduser(), subfolder)
    else:
        if force_download and (local_files_only or hf_constants.HF_HUB_OFFLINE):
            raise ValueError(
                "force_download=True needs the network, but local_files_only=True or "
                "HF_HUB_OFFLINE=1 forbids it; drop one of them"
            )
        source = _HubSource(
            str(name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            subfolder=subfolder,
        )

    config_path = source.fetch(CONFIG_NAME)
    if config_path is None:
        source.refuse_pickles(missing=CONFIG_NAME)
        raise ModelNotFoundError(
            f"{source} has no {CONFIG_NAME}, so it is not a model saved by vaekit "
            f"(files there: {source.list_files() or 'none found'}). Save models with "
            "model.save_pretrained(...) or push them with model.push_to_hub(...)."
        )
    model_cls, config = _read_config(cls, Path(config_path), source)
    _check_model_size(model_cls, config, source, max_parameters)

    weights_path = source.fetch(WEIGHTS_NAME)
    if weights_path is None:
        source.refuse_pickles(missing=WEIGHTS_NAME)
        raise ModelNotFoundError(
            f"{source} has a {CONFIG_NAME} but no {WEIGHTS_NAME} "
            f"(files there: {source.list_files() or 'none found'}); save the model again with "
            "model.save_pretrained(...)"
        )

    model = model_cls.from_config(config)
    _load_weights(model, Path(weights_path), source, strict=strict, dtype=target_dtype)
    model.to(device=target_device)
    model.eval()
    logger.info("loaded %s from %s", model_cls.__name__, source)
    return model


def _looks_like_path(name_or_path: Any) -> bool:
    if isinstance(name_or_path, os.PathLike):
        return True
    if not isinstance(name_or_path, str) or not name_or_path:
        raise TypeError(
            f"name_or_path must be a directory or a Hub repo id (a non-empty str or Path), "
            f"got {name_or_path!r}"
        )
    return (
        name_or_path.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or name_or_path in (".", "..")
        or re.match(r"^[A-Za-z]:[\\/]", name_or_path) is not None
        or "\\" in name_or_path
        or os.path.isdir(name_or_path)
    )


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` loads on the CPU; anything else goes through the one device resolver."""
    if device is None:
        return torch.device("cpu")  # documented default: load where the weights are read
    from vaekit.training.device import resolve_device  # imported late: training uses hub

    return resolve_device(device)


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32' or torch.bfloat16")
        dtype = resolved
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"dtype must be a floating torch.dtype such as torch.float64 or None, got {dtype!r}"
        )
    return dtype


# ---- config ------------------------------------------------------------------------------


def _read_config(
    cls: type[VAE] | type[AutoVAE], path: Path, source: _Source
) -> tuple[type[VAE], Any]:
    size = path.stat().st_size
    if size > _MAX_CONFIG_BYTES:
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} is {size:,} bytes; a vaekit config is well under "
            f"{_MAX_CONFIG_BYTES:,}, so this is not one"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} is not valid JSON: {err}"
        ) from err
    except RecursionError as err:  # json gives up on very deep nesting this way
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} is nested too deeply to be a vaekit config"
        ) from err
    if not isinstance(raw, dict):
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} must hold a JSON object, got {type(raw).__name__}"
        )
    version = raw.pop("format_version", None)
    model_type = raw.pop("model_type", None)
    saved_with = raw.pop("vaekit_version", None)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} has no valid format_version (got {version!r}), so it "
            "was not written by vaekit's save_pretrained"
        )
    if version > FORMAT_VERSION:
        from vaekit import __version__

        raise IncompatibleConfigError(
            f"{source} was saved in format version {version} (by vaekit {saved_with}), but this "
            f"vaekit {__version__} reads format versions up to {FORMAT_VERSION}; upgrade vaekit "
            "(pip install -U vaekit)"
        )
    if not isinstance(model_type, str) or not model_type:
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} has no model_type, so vaekit cannot tell which class "
            "to build"
        )
    try:
        saved_cls = get_model_class(model_type)
    except ValueError as err:
        raise IncompatibleConfigError(
            f"{source} holds a model of type {model_type!r}, which is not registered here: "
            f"{err}. If it is your own class, import the module that defines it before loading."
        ) from err
    if not (cls is AutoVAE or cls is VAE or issubclass(saved_cls, cls)):
        raise IncompatibleConfigError(
            f"{source} holds a {saved_cls.__name__} (model_type {model_type!r}), not a "
            f"{cls.__name__}; load it with vaekit.{saved_cls.__name__}.from_pretrained(...) "
            "or vaekit.AutoVAE.from_pretrained(...)"
        )
    try:
        config = saved_cls.config_class.from_dict(raw)
    except (ValueError, TypeError) as err:
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} is not a valid {saved_cls.config_class.__name__}: {err}"
        ) from err
    return saved_cls, config


def _check_model_size(
    model_cls: type[VAE], config: Any, source: _Source, max_parameters: int | None
) -> None:
    """Refuses a config that describes an absurdly large model, before allocating anything."""
    if max_parameters is None:
        return
    if isinstance(max_parameters, bool) or not isinstance(max_parameters, int):
        raise TypeError(f"max_parameters must be an integer or None, got {max_parameters!r}")
    for name, value in vars(config).items():
        if isinstance(value, tuple) and len(value) > _MAX_CONFIG_ITEMS:
            raise IncompatibleConfigError(
                f"{CONFIG_NAME} of {source} lists {len(value):,} entries in {name}, more than "
                f"the {_MAX_CONFIG_ITEMS} layers vaekit accepts from a file; pass "
                "max_parameters=None to load it anyway if you trust it"
            )
    try:
        # The meta device records shapes without storage: counting costs no memory.
        with torch.device("meta"):
            probe = model_cls.from_config(config)
    except (RuntimeError, OverflowError, MemoryError) as err:
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} describes tensors too large to exist ({err})"
        ) from err
    except (ValueError, TypeError) as err:
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} does not describe a buildable {model_cls.__name__}: {err}"
        ) from err
    count = sum(t.numel() for t in probe.state_dict().values())
    if count > max_parameters:
        raise IncompatibleConfigError(
            f"{CONFIG_NAME} of {source} describes a {model_cls.__name__} with {count:,} "
            f"parameters, more than max_parameters={max_parameters:,}; nothing was allocated. "
            "If you trust the file, pass max_parameters=None (or a larger limit)"
        )


# ---- weights -----------------------------------------------------------------------------


def _load_weights(
    model: VAE, path: Path, source: _Source, *, strict: bool, dtype: torch.dtype | None
) -> None:
    """Compares the safetensors header with the model's state_dict, then loads the tensors."""
    expected = model.state_dict()
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            stored: dict[str, tuple[tuple[int, ...], str]] = {}
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensor_slice = f.get_slice(key)
                stored[key] = (tuple(tensor_slice.get_shape()), tensor_slice.get_dtype())
            _compare(expected, stored, source, strict=strict)
            tensors = {key: f.get_tensor(key) for key in stored if key in expected}
    except SafetensorError as err:
        raise IntegrityError(
            f"{WEIGHTS_NAME} of {source} is not a valid safetensors file ({err}); it is damaged "
            "or was not written by safetensors. Download it again (force_download=True) or "
            "save the model again."
        ) from err

    # Without an explicit dtype, keep the saved precision: a float64 or bfloat16 model loads
    # as such, bit for bit (mixed float dtypes are promoted, so nothing is rounded).
    if dtype is None:
        float_dtypes = [t.dtype for t in tensors.values() if t.is_floating_point()]
        if float_dtypes:
            dtype = functools.reduce(torch.promote_types, float_dtypes)
    if dtype is not None:
        model.to(dtype=dtype)
    # strict=False: _compare has already enforced what `strict` asks for, with a better message.
    model.load_state_dict(tensors, strict=False)


def _compare(
    expected: Mapping[str, torch.Tensor],
    stored: Mapping[str, tuple[tuple[int, ...], str]],
    source: _Source,
    *,
    strict: bool,
) -> None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shapes, dtypes = [], []
    for key in sorted(set(expected) & set(stored)):
        shape, dtype_name = stored[key]
        want = expected[key]
        if shape != tuple(want.shape):
            shapes.append((key, shape, tuple(want.shape)))
        got = _SAFETENSORS_DTYPES.get(dtype_name)
        # Floating weights may be stored in any float precision (they are cast on load);
        # integer and bool buffers must match exactly.
        if got is None or (
            got != want.dtype and not (got.is_floating_point and want.dtype.is_floating_point)
        ):
            dtypes.append((key, dtype_name, str(want.dtype).removeprefix("torch.")))
    if strict or shapes or dtypes:
        problems = []
        if strict and missing:
            problems.append(f"missing from the file: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"not in the model: {', '.join(unexpected)}")
        problems += [f"shape of {k}: file {s}, model {m}" for k, s, m in shapes]
        problems += [f"dtype of {k}: file {s}, model {m}" for k, s, m in dtypes]
        if problems:
            hint = (
                "The config and the weights do not describe the same architecture; re-save the "
                "model with save_pretrained."
            )
            if not shapes and not dtypes:
                hint += " To load anyway, pass strict=False (missing weights keep their init)."
            raise WeightsMismatchError(
                f"{WEIGHTS_NAME} of {source} does not match the model: "
                + "; ".join(problems)
                + f". {hint}",
                missing_keys=missing,
                unexpected_keys=unexpected,
                shape_mismatches=shapes,
                dtype_mismatches=dtypes,
            )
    if missing:
        logger.warning("%s: weights missing from the file keep their init: %s", source, missing)
    if unexpected:
        logger.warning("%s: ignoring weights the model does not have: %s", source, unexpected)


# ---- sources: a local directory or a Hub repo ---------------------------------------------

_PICKLE_HINT = (
    "vaekit loads safetensors only, because unpickling a file can run arbitrary code. "
    "To convert, in an environment where you trust the file: load the state dict yourself "
    "with torch.load and weights_only=True, build the model and call "
    "model.load_state_dict(state_dict), then model.save_pretrained(directory) "
    "(or safetensors.torch.save_file(state_dict, 'model.safetensors') next to a vaekit "
    "config.json)."
)


class _Source:
    """Where the files of a saved model come from."""

    def fetch(self, filename: str) -> str | None:
        """A local path to ``filename``, or None if the model has no such file."""
        raise NotImplementedError

    def list_files(self) -> list[str]:
        """Best-effort list of the files the model has (for error messages)."""
        raise NotImplementedError

    def refuse_pickles(self, *, missing: str) -> None:
        """Raises UnsafeWeightsError if the model ships only pickled weights."""
        files = self.list_files()
        pickles = [f for f in files if f.endswith(_PICKLE_SUFFIXES)]
        if pickles and WEIGHTS_NAME not in files:
            raise UnsafeWeightsError(
                f"{self} has no {missing} and its weights are pickled ({', '.join(pickles)}). "
                + _PICKLE_HINT
            )


class _LocalSource(_Source):
    def __init__(self, path: Path, subfolder: str | None):
        self.root = path / subfolder if subfolder else path
        if not self.root.is_dir():
            if self.root.exists():
                raise ModelNotFoundError(
                    f"{str(self.root)!r} is a file; pass the directory that holds "
                    f"{CONFIG_NAME} and {WEIGHTS_NAME}"
                )
            raise ModelNotFoundError(
                f"no such directory: {str(self.root)!r} (resolved to {self.root.resolve()}). "
                "To load from the Hugging Face Hub, pass a repo id such as 'user/my-vae' "
                "(without ./, / or ~)."
            )

    def __str__(self) -> str:
        return f"directory {str(self.root)!r}"

    def fetch(self, filename: str) -> str | None:
        path = self.root / filename
        return str(path) if path.is_file() else None

    def list_files(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_file())


class _HubSource(_Source):
    def __init__(
        self,
        repo_id: str,
        *,
        revision: str | None,
        cache_dir: str | os.PathLike[str] | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        subfolder: str | None,
    ):
        self.repo_id = repo_id
        self.revision = revision or hf_constants.DEFAULT_REVISION
        self.cache_dir = Path(cache_dir or hf_constants.HF_HUB_CACHE).expanduser().resolve()
        self.force_download = force_download
        self.local_files_only = local_files_only
        self.token = token
        self.subfolder = subfolder
        self.commit: str | None = None  # pinned after the first file, so all files match

    def __str__(self) -> str:
        where = f"{self.repo_id}@{self.commit or self.revision}"
        return f"Hub repo {where}" + (f" (subfolder {self.subfolder!r})" if self.subfolder else "")

    def fetch(self, filename: str) -> str | None:
        from vaekit import __version__

        try:
            path = hf_hub_download(
                self.repo_id,
                filename,
                subfolder=self.subfolder,
                revision=self.commit or self.revision,
                cache_dir=self.cache_dir,
                force_download=self.force_download,
                local_files_only=self.local_files_only,
                token=self.token,
                library_name="vaekit",
                library_version=__version__,
            )
        except hf_errors.LocalEntryNotFoundError as err:
            self._raise_not_cached(filename, err)
        except _REMOTE_ENTRY_NOT_FOUND:
            return None
        except hf_errors.HFValidationError as err:
            raise ValueError(
                f"{self.repo_id!r} is neither an existing local directory nor a valid Hub repo "
                f"id ('user/name'): {err}"
            ) from err
        except hf_errors.HfHubHTTPError as err:
            self._raise_http(err)
        except ValueError as err:
            # With force_download=True, huggingface_hub wraps the real error in a ValueError.
            cause = err.__cause__
            if isinstance(cause, hf_errors.HfHubHTTPError):
                self._raise_http(cause)
            if isinstance(cause, (OSError, *_NETWORK_ERRORS)):
                raise HubDownloadError(
                    f"downloading {filename} from {self} failed: {cause}"
                ) from err
            raise
        except OSError as err:
            raise HubDownloadError(
                f"downloading {filename} from {self} failed: {err} Try again; if it persists, "
                "check your connection or proxy."
            ) from err
        except _NETWORK_ERRORS as err:
            raise HubDownloadError(
                f"downloading {filename} from {self} failed ({type(err).__name__}: {err}); "
                "check your connection, proxy or HF_ENDPOINT"
            ) from err
        if self.commit is None:
            self.commit = self._commit_of(path)
        self._verify(path, filename)
        return path

    def _commit_of(self, path: str) -> str | None:
        snapshots = self.cache_dir / repo_folder_name(repo_id=self.repo_id, repo_type="model")
        try:
            commit = Path(path).relative_to(snapshots / "snapshots").parts[0]
        except (ValueError, IndexError):
            return None
        return commit if _GIT_SHA1.fullmatch(commit) else None

    def _verify(self, path: str, filename: str) -> None:
        """Checks a cached file against the checksum the Hub advertised when it was fetched.

        huggingface_hub names each blob after the Hub's ETag: the sha256 for LFS files, the git
        blob sha1 for the others, but it only checks sizes. Hashing the blob catches a
        download corrupted on the way (same length, other bytes) and a damaged cache.
        """
        blob = Path(os.path.realpath(path))
        expected = blob.name
        if blob.parent.name != "blobs":
            logger.warning(
                "cannot verify %s of %s: the cache does not use symlinks, so the Hub's checksum "
                "is not recorded",
                filename,
                self,
            )
            return
        if _SHA256.fullmatch(expected):
            kind, actual = "sha256", _sha256_file(blob)
        elif _GIT_SHA1.fullmatch(expected):
            kind, actual = "git sha1", _git_blob_sha1_file(blob)
        else:
            logger.warning("cannot verify %s of %s: unknown ETag %r", filename, self, expected)
            return
        if actual == expected:
            return
        for damaged in (Path(path), blob):
            try:
                damaged.unlink()
            except OSError as err:
                logger.warning("could not remove damaged file %s: %s", damaged, err)
        raise IntegrityError(
            f"{filename} of {self} is corrupted: its {kind} is {actual} but the Hub advertises "
            f"{expected}. The damaged copy was removed from the cache; load again to download it "
            "afresh. If this repeats, something between you and the Hub alters downloads."
        )

    def _raise_not_cached(self, filename: str, err: Exception) -> NoReturn:
        if self.local_files_only or hf_constants.HF_HUB_OFFLINE:
            why = "local_files_only=True" if self.local_files_only else "HF_HUB_OFFLINE=1"
            raise ModelNotFoundError(
                f"{filename} of {self} is not in the local cache ({self.cache_dir}) and {why} "
                "forbids downloading it; load it once online (or pass the right cache_dir)"
            ) from err
        raise HubDownloadError(
            f"could not reach the Hub for {filename} of {self}, and it is not cached: {err}"
        ) from err

    def _raise_http(self, err: hf_errors.HfHubHTTPError) -> NoReturn:
        status = err.response.status_code if err.response is not None else None
        token_hint = (
            "If it is private or gated, pass token=... (a token with read access) or run "
            "`hf auth login`"
        )
        if isinstance(err, hf_errors.GatedRepoError):
            raise HubAccessError(
                f"{self.repo_id} is gated: accept its conditions on the Hub, then use a token "
                f"of that account. {token_hint}."
            ) from err
        if isinstance(err, hf_errors.RepositoryNotFoundError):
            if status == 401:
                raise HubAccessError(
                    f"the Hub refused {self.repo_id} (401): it does not exist, or it is private "
                    f"and no valid token was sent. Check the repo id. {token_hint}."
                ) from err
            raise ModelNotFoundError(
                f"no Hub repo {self.repo_id!r} (or your token cannot see it); check the repo "
                "id (e.g. 'user/my-vae')"
            ) from err
        if isinstance(err, hf_errors.RevisionNotFoundError):
            raise ModelNotFoundError(
                f"{self.repo_id} has no revision {self.revision!r}; pass an existing branch, tag "
                "or full commit sha"
            ) from err
        if status in (401, 403):
            raise HubAccessError(
                f"the Hub refused {self.repo_id} ({status}): the token is invalid or lacks "
                f"access. {token_hint}."
            ) from err
        raise HubDownloadError(f"the Hub answered {status} for {self}: {err}") from err

    def list_files(self) -> list[str]:
        prefix = f"{self.subfolder.strip('/')}/" if self.subfolder else ""
        try:
            files = HfApi(token=self.token).list_repo_files(
                self.repo_id, revision=self.commit or self.revision
            )
        except _LISTING_ERRORS:
            return self._cached_files(prefix)
        return sorted(f[len(prefix) :] for f in files if f.startswith(prefix))

    def _cached_files(self, prefix: str) -> list[str]:
        if self.commit is None:
            return []
        snapshot = (
            self.cache_dir
            / repo_folder_name(repo_id=self.repo_id, repo_type="model")
            / "snapshots"
            / self.commit
            / prefix
        )
        return (
            sorted(p.name for p in snapshot.iterdir() if p.is_file()) if snapshot.is_dir() else []
        )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_sha1_file(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Pushing
# --------------------------------------------------------------------------------------------


def push_to_hub(
    model: VAE,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    model_card: Mapping[str, Any] | None = None,
) -> str:
    """Uploads ``config.json``, ``model.safetensors`` and ``README.md`` in one commit.

    Creates the repo if needed (and the branch, for ``revision``). The model card's usage
    snippet names ``repo_id``.

    Args:
        model: the model to share.
        repo_id: ``"user/name"`` or ``"org/name"``.
        private: make a new repo private (``None``: the account's default).
        token: a token with write access (default: the one ``hf auth login`` saved).
        revision: branch to commit to (default ``"main"``).
        commit_message: default ``"Upload <Class> with vaekit <version>"``.
        model_card: as in :func:`save_pretrained`.

    Returns:
        The URL of the commit.
    """
    from vaekit import __version__

    if not isinstance(model, VAE):
        raise TypeError(f"push_to_hub needs a vaekit.VAE, got {type(model).__name__}")
    card = dict(model_card or {})
    card.setdefault("repo_id", repo_id)
    _check_model_card(card)
    api = HfApi(token=token, library_name="vaekit", library_version=__version__)
    try:
        repo_id = api.create_repo(
            repo_id, private=private, exist_ok=True, repo_type="model"
        ).repo_id
        if revision is not None and revision != hf_constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory(prefix="vaekit-push-") as tmp:
            save_pretrained(model, tmp, model_card=card)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                repo_type="model",
                revision=revision,
                commit_message=commit_message
                or f"Upload {type(model).__name__} with vaekit {__version__}",
            )
    except hf_errors.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise HubAccessError(
                f"the Hub refused to let you write to {repo_id} ({status}); pass token=... with "
                "write access or run `hf auth login`"
            ) from err
        raise
    return str(getattr(commit, "commit_url", commit))
