"""TrainConfig: exact JSON round trip and clear errors for invalid values."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vaekit.training import TrainConfig


def test_default_config_round_trips_through_json() -> None:
    config = TrainConfig()
    again = TrainConfig.from_json(config.to_json())
    assert again == config
    assert isinstance(again.adam_betas, tuple)


def test_every_field_round_trips_with_non_default_values() -> None:
    config = TrainConfig(
        max_epochs=3,
        max_steps=17,
        batch_size=7,
        eval_batch_size=9,
        drop_last=True,
        lr=3e-4,
        optimizer="adamw",
        adam_betas=(0.8, 0.95),
        weight_decay=0.01,
        lr_warmup_steps=5,
        lr_schedule="cosine",
        min_lr_ratio=0.1,
        grad_clip_norm=1.5,
        beta=4.0,
        beta_schedule="cyclical",
        beta_cycle_steps=12,
        beta_cycle_ratio=0.25,
        free_bits=0.5,
        iwae_samples=3,
        binarize=True,
        device="cpu",
        precision="bf16",
        compile=True,
        matmul_precision="high",
        data_path="loader",
        num_workers=2,
        output_dir="runs/x",
        overwrite=True,
        seed=123,
        checkpoint_every_steps=10,
        checkpoint_every_epochs=None,
        keep_last=4,
        eval_every_epochs=2,
        nan_policy="skip",
        max_consecutive_skips=3,
        early_stopping_patience=2,
        early_stopping_min_delta=0.1,
        log_every_steps=3,
        progress=False,
        save_images=False,
        num_image_samples=16,
        tensorboard=True,
        ddp_find_unused_parameters=True,
    )
    defaults = TrainConfig()
    unchanged = [
        f.name
        for f in dataclasses.fields(config)
        if getattr(config, f.name) == getattr(defaults, f.name)
    ]
    # kl_warmup_steps only goes with beta_schedule="linear"; the next test covers it.
    assert unchanged == ["kl_warmup_steps"], "the test should change every field"
    text = config.to_json()
    assert json.loads(text)["adam_betas"] == [0.8, 0.95]
    again = TrainConfig.from_json(text)
    assert again == config
    assert again.adam_betas == (0.8, 0.95) and isinstance(again.adam_betas, tuple)


def test_linear_warmup_round_trips() -> None:
    config = TrainConfig(beta_schedule="linear", kl_warmup_steps=50)
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"max_epochs": 0}, "max_epochs must be >= 1"),
        ({"max_steps": 0}, "max_steps must be >= 1"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"precision": "fp8"}, "'fp32', 'bf16', 'fp16'"),
        ({"optimizer": "sgd"}, "'adam', 'adamw'"),
        ({"lr_schedule": "step"}, "'constant', 'cosine'"),
        ({"beta_schedule": "sigmoid"}, "'constant', 'linear', 'cyclical'"),
        ({"nan_policy": "ignore"}, "'raise', 'skip'"),
        ({"data_path": "gpu"}, "'auto', 'memory', 'loader'"),
        ({"grad_clip_norm": 0.0}, "grad_clip_norm must be > 0"),
        ({"keep_last": 0}, "keep_last must be >= 1"),
        ({"beta": -1.0}, "beta must be a finite number >= 0"),
        ({"iwae_samples": 0}, "iwae_samples must be >= 1"),
        ({"adam_betas": (0.9, 1.0)}, "adam_betas must be two numbers"),
        ({"kl_warmup_steps": 10}, "beta_schedule='linear'"),
        ({"beta_schedule": "linear"}, "needs kl_warmup_steps"),
        ({"batch_size": 2.5}, "batch_size: expected an integer"),
        ({"binarize": "yes"}, "binarize: expected true/false"),
    ],
)
def test_invalid_values_raise_value_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown TrainConfig keys \\['epochs'\\]"):
        TrainConfig.from_dict({"epochs": 3})
