"""Saving, loading and sharing models: vaekit.hub, against local directories and the Hub emulator.

Nothing here reaches the real Hub: the ``hub`` fixture (tests/conftest.py) points
huggingface_hub at tests/hub_server.py on 127.0.0.1; every other test runs offline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import safetensors.torch
import torch
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub import constants as hf_constants

import vaekit
from vaekit import hub as vhub
from vaekit.hub import (
    AutoVAE,
    HubAccessError,
    HubDownloadError,
    IncompatibleConfigError,
    IntegrityError,
    ModelNotFoundError,
    UnsafeWeightsError,
    WeightsMismatchError,
)
from vaekit.models import MLPVAE, VAE, ConvVAE, register_model

LIKELIHOODS = [
    ("bernoulli", {}),
    ("gaussian", {"scale": "learned"}),
    ("continuous_bernoulli", {}),
    ("laplace", {"scale": "learned"}),
    ("discretized_logistic", {"num_mixtures": 2}),
]


def make_model(
    arch: str = "mlp", likelihood: str = "gaussian", seed: int = 0, **kwargs: Any
) -> VAE:
    """A tiny model whose every weight differs from a fresh initialisation."""
    torch.manual_seed(seed)
    kwargs.setdefault("likelihood_kwargs", dict(LIKELIHOODS)[likelihood])
    if arch == "mlp":
        model: VAE = MLPVAE(
            input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(16,), likelihood=likelihood, **kwargs
        )
    else:
        model = ConvVAE(
            input_shape=(1, 8, 8), latent_dim=3, channels=(4, 8), likelihood=likelihood, **kwargs
        )
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
        if hasattr(model.likelihood, "raw_scale"):
            model.likelihood.raw_scale.fill_(-0.7)  # learned scale far from its default
    return model


def assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    got, want = loaded.state_dict(), original.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key].cpu(), want[key].cpu()), key


def repo_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def upload(hub: Any, repo_id: str, model: VAE, tmp_path: Path, **kwargs: Any) -> str:
    directory = model.save_pretrained(tmp_path / f"upload-{repo_id.replace('/', '-')}")
    return hub.add_repo(repo_id, repo_files(directory), **kwargs)


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", [name for name, _ in LIKELIHOODS])
@pytest.mark.parametrize("where", ["local", "hub"])
def test_round_trip_is_bit_exact(arch, likelihood, where, tmp_path, request):
    model = make_model(arch, likelihood)
    model.train()
    if where == "local":
        loaded = type(model).from_pretrained(model.save_pretrained(tmp_path / "m"))
    else:
        hub = request.getfixturevalue("hub")
        upload(hub, "user/tiny", model, tmp_path)
        loaded = type(model).from_pretrained("user/tiny")
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert_same_weights(loaded, model)
    if hasattr(model.likelihood, "raw_scale"):
        assert loaded.likelihood.raw_scale.item() == pytest.approx(-0.7)
    assert not loaded.training
    model.eval()
    x = torch.rand(3, 1, 8, 8)
    if likelihood == "bernoulli":
        x = x.round()
    if likelihood == "discretized_logistic":
        x = torch.round(x * 255) / 255
    torch.testing.assert_close(loaded.reconstruct(x), model.reconstruct(x), rtol=0, atol=0)


def test_saved_files_are_the_documented_layout(tmp_path):
    model = make_model("conv", "discretized_logistic")
    directory = model.save_pretrained(tmp_path / "m")
    assert sorted(repo_files(directory)) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "conv_vae"
    assert config["format_version"] == vhub.FORMAT_VERSION == 1
    assert config["vaekit_version"] == vaekit.__version__
    assert config["channels"] == [4, 8]
    assert config["likelihood_kwargs"] == {"num_mixtures": 2}
    tensors = safetensors.torch.load_file(directory / "model.safetensors")
    assert set(tensors) == set(model.state_dict())
    with open(directory / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert header["__metadata__"] == {"format": "pt"}


def test_tuples_round_trip_as_tuples(tmp_path):
    model = make_model("conv", "bernoulli")
    loaded = AutoVAE.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config.input_shape == (1, 8, 8)
    assert isinstance(loaded.config.input_shape, tuple)
    assert isinstance(loaded.config.channels, tuple)
    mlp = AutoVAE.from_pretrained(make_model("mlp").save_pretrained(tmp_path / "mlp"))
    assert isinstance(mlp.config.hidden_dims, tuple) and mlp.config.hidden_dims == (16,)


def test_conditional_model_round_trips(tmp_path):
    model = make_model("mlp", "bernoulli", num_classes=3)
    loaded = AutoVAE.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.num_classes == 3
    assert_same_weights(loaded, model)
    assert "model.sample(16, y=0)" in (tmp_path / "m" / "README.md").read_text()


def test_dtype_and_device_are_applied_and_model_is_in_eval_mode(tmp_path, device):
    model = make_model("conv", "gaussian")
    model.train()
    path = model.save_pretrained(tmp_path / "m")
    loaded = ConvVAE.from_pretrained(path, dtype=torch.float64, device=device)
    assert not loaded.training and not any(m.training for m in loaded.modules())
    assert {p.dtype for p in loaded.parameters()} == {torch.float64}
    assert loaded.dtype == torch.float64  # the non-persistent prior buffers follow too
    assert {p.device.type for p in loaded.parameters()} == {device.type}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key].cpu(), value.double()), key
    z = torch.zeros(2, 3, dtype=torch.float64, device=device)
    assert loaded.decode(z).mean.dtype == torch.float64
    default = ConvVAE.from_pretrained(path)
    assert {p.device.type for p in default.parameters()} == {"cpu"}
    with pytest.raises(TypeError, match=r"floating torch\.dtype"):
        ConvVAE.from_pretrained(path, dtype=torch.int64)
    with pytest.raises(ValueError, match="device"):
        ConvVAE.from_pretrained(path, device="not-a-device")


def test_auto_device_uses_the_accelerator_if_any(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    accelerator = (
        torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    )
    expected = accelerator.type if accelerator is not None else "cpu"
    loaded = MLPVAE.from_pretrained(path, device="auto")
    assert {p.device.type for p in loaded.parameters()} == {expected}


def test_saved_precision_is_kept_when_dtype_is_not_given(tmp_path):
    model = make_model("mlp", "gaussian").to(torch.float64)
    loaded = MLPVAE.from_pretrained(model.save_pretrained(tmp_path / "m64"))
    assert_same_weights(loaded, model)  # float64 bit for bit, not rounded through float32
    half = make_model("mlp", "gaussian").to(torch.bfloat16)
    loaded = MLPVAE.from_pretrained(half.save_pretrained(tmp_path / "bf16"), dtype=torch.float32)
    for key, value in half.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.float()), key


# --------------------------------------------------------------------------------------------
# AutoVAE dispatch
# --------------------------------------------------------------------------------------------


@register_model
class _UserVAE(MLPVAE):
    """A user's own architecture, registered under its own model_type."""

    model_type = "test_user_vae"


def test_autovae_picks_the_class_from_config(tmp_path):
    for model in (make_model("mlp"), make_model("conv"), _UserVAE(input_shape=(4,), latent_dim=2)):
        path = model.save_pretrained(tmp_path / type(model).__name__)
        loaded = AutoVAE.from_pretrained(path)
        assert type(loaded) is type(model)
        assert_same_weights(loaded, model)
        assert type(VAE.from_pretrained(path)) is type(model)
    # A registered subclass loads through its parent class too (it *is* an MLPVAE).
    assert type(MLPVAE.from_pretrained(tmp_path / "_UserVAE")) is _UserVAE
    with pytest.raises(IncompatibleConfigError, match="MLPVAE"):
        _UserVAE.from_pretrained(tmp_path / "MLPVAE")
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoVAE()


def test_saving_an_unloadable_class_is_refused(tmp_path):
    class Unregistered(MLPVAE):
        model_type = "test_unregistered_vae"

    class InheritsModelType(MLPVAE):
        pass

    with pytest.raises(ValueError, match="not registered"):
        Unregistered(input_shape=(4,), latent_dim=2).save_pretrained(tmp_path / "a")
    with pytest.raises(ValueError, match="would load back as a MLPVAE"):
        InheritsModelType(input_shape=(4,), latent_dim=2).save_pretrained(tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unregistered_model_type_is_refused_with_a_hint(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "someone_elses_vae"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(IncompatibleConfigError, match=r"someone_elses_vae.*not registered"):
        AutoVAE.from_pretrained(path)


# --------------------------------------------------------------------------------------------
# Refusals: files
# --------------------------------------------------------------------------------------------


def test_pickle_only_directory_is_refused(tmp_path):
    directory = tmp_path / "pickled"
    directory.mkdir()
    # Never read: vaekit must refuse before touching it (the bytes are not even a pickle).
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04 not read")
    with pytest.raises(UnsafeWeightsError) as info:
        AutoVAE.from_pretrained(directory)
    message = str(info.value)
    assert "pytorch_model.bin" in message
    assert "arbitrary code" in message  # why
    assert "save_pretrained" in message and "safetensors.torch.save_file" in message  # how


def test_pickle_only_repo_is_refused_without_downloading_it(hub, tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    files = {"config.json": (path / "config.json").read_bytes(), "pytorch_model.bin": b"\x80\x04"}
    hub.add_repo("user/pickled", files)
    with pytest.raises(UnsafeWeightsError, match=r"pytorch_model\.bin.*torch\.load"):
        MLPVAE.from_pretrained("user/pickled")
    assert not [r for r in hub.requests if r.method == "GET" and "pytorch_model" in r.path]


def _rewrite_weights(path: Path, edit: Any) -> None:
    tensors = safetensors.torch.load_file(path / "model.safetensors")
    edit(tensors)
    safetensors.torch.save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_weight_is_refused_unless_not_strict(tmp_path):
    model = make_model("mlp", "gaussian")
    path = model.save_pretrained(tmp_path / "m")
    _rewrite_weights(path, lambda t: t.pop("likelihood.raw_scale"))
    with pytest.raises(WeightsMismatchError, match=r"missing from the file: likelihood\.raw_scale"):
        MLPVAE.from_pretrained(path)
    try:
        MLPVAE.from_pretrained(path)
    except WeightsMismatchError as err:
        assert err.missing_keys == ["likelihood.raw_scale"] and not err.unexpected_keys
    loaded = MLPVAE.from_pretrained(path, strict=False)
    for key, value in model.state_dict().items():
        if key != "likelihood.raw_scale":
            assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.likelihood.raw_scale.item() != pytest.approx(-0.7)  # kept its init


def test_unexpected_weight_is_refused_unless_not_strict(tmp_path):
    model = make_model("mlp", "bernoulli")
    path = model.save_pretrained(tmp_path / "m")
    _rewrite_weights(path, lambda t: t.update({"extra.weight": torch.ones(2)}))
    with pytest.raises(WeightsMismatchError, match=r"not in the model: extra\.weight") as info:
        MLPVAE.from_pretrained(path)
    assert info.value.unexpected_keys == ["extra.weight"]
    assert_same_weights(MLPVAE.from_pretrained(path, strict=False), model)


def test_shape_mismatch_is_refused_even_when_not_strict(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    _rewrite_weights(path, lambda t: t.update({"encoder_head.bias": torch.zeros(5)}))
    for strict in (True, False):
        with pytest.raises(
            WeightsMismatchError, match=r"encoder_head\.bias: file \(5,\), model \(4,\)"
        ):
            MLPVAE.from_pretrained(path, strict=strict)


def test_dtype_mismatch_is_refused(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    _rewrite_weights(
        path, lambda t: t.update({"encoder_head.bias": torch.zeros(4, dtype=torch.int32)})
    )
    with pytest.raises(WeightsMismatchError, match=r"dtype of encoder_head\.bias: file I32"):
        MLPVAE.from_pretrained(path, strict=False)
    # An integer buffer stored as float is refused too (float weights may change precision).
    batchnorm = make_model("mlp", norm="batch")
    path = batchnorm.save_pretrained(tmp_path / "bn")
    key = "encoder.1.num_batches_tracked"
    assert batchnorm.state_dict()[key].dtype == torch.int64
    _rewrite_weights(path, lambda t: t.update({key: t[key].float()}))
    with pytest.raises(
        WeightsMismatchError, match=rf"dtype of {re.escape(key)}: file F32, model int64"
    ):
        MLPVAE.from_pretrained(path)


def test_damaged_safetensors_file_is_refused(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(IntegrityError, match="not a valid safetensors file"):
        MLPVAE.from_pretrained(path)


def test_missing_config_is_refused(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    (path / "config.json").unlink()
    with pytest.raises(ModelNotFoundError, match=r"no config\.json.*not a model saved by vaekit"):
        MLPVAE.from_pretrained(path)


def test_missing_config_in_repo_is_refused(hub, tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    hub.add_repo("user/noconfig", {"model.safetensors": (path / "model.safetensors").read_bytes()})
    with pytest.raises(ModelNotFoundError, match=r"no config\.json.*model\.safetensors"):
        AutoVAE.from_pretrained("user/noconfig")


def test_config_of_another_class_is_refused(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    with pytest.raises(IncompatibleConfigError) as info:
        ConvVAE.from_pretrained(path)
    assert "holds a MLPVAE" in str(info.value)
    assert "MLPVAE.from_pretrained" in str(info.value) and "AutoVAE" in str(info.value)


def test_newer_format_version_is_refused(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = vhub.FORMAT_VERSION + 1
    config["vaekit_version"] = "9.0.0"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        IncompatibleConfigError, match=r"format version 2 \(by vaekit 9\.0\.0\).*upgrade"
    ):
        AutoVAE.from_pretrained(path)


def test_invalid_config_values_are_refused(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["latent_dim"] = "two"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(IncompatibleConfigError, match="latent_dim"):
        AutoVAE.from_pretrained(path)
    del config["format_version"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(IncompatibleConfigError, match="format_version"):
        AutoVAE.from_pretrained(path)


@pytest.mark.parametrize(
    "name",
    ["./nowhere", "../nowhere", "/nonexistent/vaekit-model", "~/nonexistent-vaekit", Path("rel")],
)
def test_missing_local_path_is_not_sent_to_the_hub(name, hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        AutoVAE.from_pretrained(name)
    assert hub.requests == []


def test_a_file_path_is_refused_with_a_hint(tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        AutoVAE.from_pretrained(path / "model.safetensors")
    with pytest.raises(ValueError, match="only applies to Hub repos"):
        AutoVAE.from_pretrained(path, revision="main")


def test_subfolder(tmp_path, hub):
    model = make_model("mlp")
    root = tmp_path / "root"
    model.save_pretrained(root / "vae")
    assert_same_weights(AutoVAE.from_pretrained(root, subfolder="vae"), model)
    files = {f"vae/{name}": data for name, data in repo_files(root / "vae").items()}
    hub.add_repo("user/pipeline", files)
    assert_same_weights(AutoVAE.from_pretrained("user/pipeline", subfolder="vae"), model)
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        AutoVAE.from_pretrained("user/pipeline")


# --------------------------------------------------------------------------------------------
# The Hub: revisions, cache, errors, integrity
# --------------------------------------------------------------------------------------------


def test_revision_pinning_by_branch_and_commit(hub, tmp_path):
    first, second, third = (make_model("mlp", seed=s) for s in (1, 2, 3))
    sha1 = upload(hub, "user/evolving", first, tmp_path / "1")
    sha2 = upload(hub, "user/evolving", second, tmp_path / "2")
    sha3 = upload(hub, "user/evolving", third, tmp_path / "3", branch="dev")
    assert len({sha1, sha2, sha3}) == 3
    assert_same_weights(MLPVAE.from_pretrained("user/evolving", revision=sha1), first)
    assert_same_weights(MLPVAE.from_pretrained("user/evolving"), second)
    assert_same_weights(MLPVAE.from_pretrained("user/evolving", revision="main"), second)
    assert_same_weights(MLPVAE.from_pretrained("user/evolving", revision="dev"), third)
    assert_same_weights(MLPVAE.from_pretrained("user/evolving", revision=sha3), third)


def test_weights_come_from_the_commit_of_the_config(hub, tmp_path):
    sha = upload(hub, "user/pinned", make_model("mlp"), tmp_path)
    hub.clear_requests()
    MLPVAE.from_pretrained("user/pinned", force_download=True)
    weight_heads = [
        r.path for r in hub.requests if "model.safetensors" in r.path and r.server == "hub"
    ]
    assert weight_heads == [f"/user/pinned/resolve/{sha}/model.safetensors"]


def test_cached_model_loads_offline_with_zero_requests(hub, hub_offline, tmp_path):
    model = make_model("conv", "gaussian")
    sha = upload(hub, "user/cached", model, tmp_path)
    ConvVAE.from_pretrained("user/cached")
    hub.clear_requests()
    # A commit sha is immutable: even online, a cached commit needs no request.
    assert_same_weights(ConvVAE.from_pretrained("user/cached", revision=sha), model)
    assert hub.requests == []
    hub_offline(True)
    assert_same_weights(ConvVAE.from_pretrained("user/cached"), model)
    assert_same_weights(ConvVAE.from_pretrained("user/cached", local_files_only=True), model)
    assert hub.requests == []


def test_offline_with_empty_cache_is_refused_without_requests(hub, hub_offline, tmp_path):
    upload(hub, "user/never-fetched", make_model("mlp"), tmp_path)
    hub_offline(True)
    with pytest.raises(ModelNotFoundError, match=r"not in the local cache.*HF_HUB_OFFLINE=1"):
        AutoVAE.from_pretrained("user/never-fetched")
    with pytest.raises(ValueError, match="force_download=True needs the network"):
        AutoVAE.from_pretrained("user/never-fetched", force_download=True)
    hub_offline(False)
    with pytest.raises(ModelNotFoundError, match="local_files_only=True"):
        AutoVAE.from_pretrained("user/never-fetched", local_files_only=True)
    assert hub.requests == []


def test_missing_repo_revision_and_file(hub, tmp_path):
    path = make_model("mlp").save_pretrained(tmp_path / "m")
    hub.add_repo("user/noweights", {"config.json": (path / "config.json").read_bytes()})
    upload(hub, "user/exists", make_model("mlp"), tmp_path)
    # Anonymous callers get 401 for missing repos from the real Hub too: say both causes.
    with pytest.raises(HubAccessError, match="does not exist, or it is private"):
        AutoVAE.from_pretrained("user/does-not-exist")
    with pytest.raises(ModelNotFoundError, match="no Hub repo 'user/does-not-exist'"):
        AutoVAE.from_pretrained("user/does-not-exist", token=hub.token)
    with pytest.raises(ModelNotFoundError, match="has no revision 'v9'"):
        AutoVAE.from_pretrained("user/exists", revision="v9")
    with pytest.raises(ModelNotFoundError, match=r"has a config\.json but no model\.safetensors"):
        AutoVAE.from_pretrained("user/noweights")
    with pytest.raises(ValueError, match="neither an existing local directory nor a valid Hub"):
        AutoVAE.from_pretrained("not a/valid//repo id")


def test_private_repo_needs_the_token(hub, tmp_path):
    model = make_model("mlp")
    upload(hub, "user/secret", model, tmp_path, private=True)
    with pytest.raises(HubAccessError, match="token"):
        AutoVAE.from_pretrained("user/secret")
    with pytest.raises(HubAccessError, match="invalid or lacks access"):
        AutoVAE.from_pretrained("user/secret", token="hf_wrong")
    assert_same_weights(AutoVAE.from_pretrained("user/secret", token=hub.token), model)
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert cdn and all("authorization" not in r.headers for r in cdn)  # token stays on the Hub


def test_corrupted_download_of_the_same_length_is_caught(hub, tmp_path):
    model = make_model("mlp", "gaussian")
    upload(hub, "user/flaky", model, tmp_path)
    hub.inject_fault("user/flaky", "model.safetensors", "corrupt", times=1)
    with pytest.raises(IntegrityError, match=r"model\.safetensors.*corrupted.*sha256"):
        MLPVAE.from_pretrained("user/flaky")
    # The damaged blob is gone from the cache, so the next load downloads a good copy.
    blobs = list((tmp_path / "hf-cache").glob("models--user--flaky/blobs/*"))
    assert len(blobs) == 1  # config.json only
    assert_same_weights(MLPVAE.from_pretrained("user/flaky"), model)


def test_the_corruption_fault_is_invisible_to_safetensors(tmp_path):
    """Why the checksum matters: the emulator's corrupted bytes still parse and load."""
    data = (make_model("mlp").save_pretrained(tmp_path / "m") / "model.safetensors").read_bytes()
    corrupted = data[:-8] + bytes(b ^ 0x01 for b in data[-8:])
    good, bad = safetensors.torch.load(data), safetensors.torch.load(corrupted)
    assert good.keys() == bad.keys()
    assert any(not torch.equal(good[k], bad[k]) for k in good)


def test_damaged_cache_is_caught(hub, hub_offline, tmp_path):
    upload(hub, "user/rotting", make_model("mlp"), tmp_path)
    MLPVAE.from_pretrained("user/rotting")
    (weights,) = [
        p
        for p in (tmp_path / "hf-cache").glob("models--user--rotting/blobs/*")
        if p.stat().st_size > 1000
    ]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    hub_offline(True)
    with pytest.raises(IntegrityError, match="corrupted"):
        MLPVAE.from_pretrained("user/rotting")


def test_oversized_download_is_refused(hub, tmp_path):
    upload(hub, "user/bloated", make_model("mlp"), tmp_path)
    hub.inject_fault("user/bloated", "model.safetensors", "oversize")
    with pytest.raises(HubDownloadError, match=r"model\.safetensors"):
        MLPVAE.from_pretrained("user/bloated")
    assert not list((tmp_path / "hf-cache").glob("models--user--bloated/blobs/*.incomplete"))


def test_redirect_loop_is_refused(hub, tmp_path):
    upload(hub, "user/loop", make_model("mlp"), tmp_path)
    hub.inject_fault("user/loop", "model.safetensors", "redirect_loop")
    with pytest.raises(HubDownloadError, match=r"TooManyRedirects|redirect"):
        MLPVAE.from_pretrained("user/loop")


def test_slow_download_is_retried_then_gives_up(hub, tmp_path, monkeypatch):
    model = make_model("mlp")
    upload(hub, "user/slow", model, tmp_path)
    monkeypatch.setattr(hf_constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.2)
    hub.inject_fault("user/slow", "model.safetensors", "slow", times=1, delay=2.0)
    assert_same_weights(MLPVAE.from_pretrained("user/slow"), model)  # one stall, then resumed
    hub.inject_fault("user/slow", "model.safetensors", "slow", delay=2.0)
    with pytest.raises(HubDownloadError):
        MLPVAE.from_pretrained("user/slow", force_download=True)


# --------------------------------------------------------------------------------------------
# Model card and push_to_hub
# --------------------------------------------------------------------------------------------


def test_model_card_has_hub_metadata_and_a_readable_body(tmp_path):
    model = make_model("conv", "discretized_logistic")
    card_facts = {
        "license": "apache-2.0",
        "datasets": ["fashion_mnist"],
        "metrics": {"nll": 231.75, "bits_per_dim": 0.4267},
        "training": {"epochs": 3, "lr": 0.001},
        "description": "A test model.",
        "repo_id": "user/card",
    }
    path = model.save_pretrained(tmp_path / "m", model_card=card_facts)
    card = ModelCard.load(path / "README.md")
    assert card.data.library_name == "vaekit"
    assert {"vaekit", "vae", "conv_vae"} <= set(card.data.tags)
    assert card.data.license == "apache-2.0"
    assert card.data.datasets == ["fashion_mnist"]
    assert card.data.metrics == ["nll", "bits_per_dim"]
    body = card.text
    assert "`ConvVAE`" in body and "`(4, 8)`" in body  # architecture
    assert '`discretized_logistic` with `{"num_mixtures": 2}`' in body  # likelihood
    assert "- fashion_mnist" in body  # training data
    assert "| nll | 231.75 |" in body and "| bits_per_dim | 0.4267 |" in body  # metrics
    assert "| epochs | 3 |" in body
    assert 'vaekit.AutoVAE.from_pretrained("user/card")' in body  # usage
    plain = ModelCard.load(model.save_pretrained(tmp_path / "plain") / "README.md")
    assert plain.data.license is None and "Not recorded." in plain.text
    with pytest.raises(ValueError, match="unknown model_card keys"):
        model.save_pretrained(tmp_path / "bad", model_card={"licence": "mit"})
    with pytest.raises(TypeError, match="metric 'nll' must be a number"):
        model.save_pretrained(tmp_path / "bad", model_card={"metrics": {"nll": "low"}})


@dataclass
class _Upload:
    repo_id: str
    revision: str | None
    commit_message: str
    files: dict[str, bytes]


def test_push_to_hub_uploads_the_saved_files(monkeypatch, tmp_path, hub):
    from huggingface_hub import HfApi

    calls: dict[str, Any] = {"uploads": [], "branches": []}

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, **kw):
        calls["create_repo"] = (repo_id, private, exist_ok, repo_type)
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, *, branch, exist_ok=False, **kw):
        calls["branches"].append((repo_id, branch, exist_ok))

    def upload_folder(self, *, repo_id, folder_path, revision=None, commit_message=None, **kw):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        calls["uploads"].append(_Upload(repo_id, revision, commit_message, files))
        return SimpleNamespace(commit_url=f"https://hub.test/{repo_id}/commit/abc")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)

    model = make_model("mlp", "laplace")
    url = model.push_to_hub(
        "user/pushed", private=True, revision="v1", model_card={"metrics": {"nll": 1.5}}
    )
    assert url == "https://hub.test/user/pushed/commit/abc"
    assert calls["create_repo"] == ("user/pushed", True, True, "model")
    assert calls["branches"] == [("user/pushed", "v1", True)]
    (pushed,) = calls["uploads"]
    assert (pushed.repo_id, pushed.revision) == ("user/pushed", "v1")
    assert "MLPVAE" in pushed.commit_message
    assert sorted(pushed.files) == ["README.md", "config.json", "model.safetensors"]
    assert json.loads(pushed.files["config.json"])["model_type"] == "mlp_vae"
    weights = safetensors.torch.load(pushed.files["model.safetensors"])
    for key, value in model.state_dict().items():
        assert torch.equal(weights[key], value), key
    card = pushed.files["README.md"].decode()
    assert 'AutoVAE.from_pretrained("user/pushed")' in card and "| nll | 1.5 |" in card
    # What was pushed loads back, bit for bit.
    hub.add_repo("user/pushed", pushed.files)
    assert_same_weights(AutoVAE.from_pretrained("user/pushed"), model)
    model.push_to_hub("user/pushed")
    assert calls["branches"] == [("user/pushed", "v1", True)]  # main needs no new branch


# --------------------------------------------------------------------------------------------
# The emulator itself (shared test infrastructure)
# --------------------------------------------------------------------------------------------


def test_emulator_env_points_a_subprocess_at_it(hub, tmp_path):
    hub.add_repo("user/sub", {"config.json": b'{"from": "emulator"}'})
    env = {**os.environ, **hub.client_env(), "HF_HUB_CACHE": str(tmp_path / "sub-cache")}
    script = "from huggingface_hub import hf_hub_download as d; print(open(d('user/sub', 'config.json')).read())"
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '{"from": "emulator"}'
    assert any(r.path == "/user/sub/resolve/main/config.json" for r in hub.requests)


def test_emulator_serves_snapshot_download(hub, tmp_path):
    files = {"config.json": b"{}", "model.safetensors": b"w" * 64, "sub/notes.txt": b"hi"}
    sha = hub.add_repo("org/snap", files)
    folder = Path(snapshot_download("org/snap"))
    assert folder.name == sha
    got = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert got == files
    assert {r.server for r in hub.requests} == {"hub", "cdn"}
