"""Bad input fails early with an error that says what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from trainer_helpers import PlainDataset, make_config, make_dataset, make_images, make_model

from vaekit.training import TrainConfig, Trainer


@pytest.mark.parametrize(
    "data",
    [TensorDataset(torch.empty(0, 1, 8, 8)), PlainDataset(torch.empty(0, 1, 8, 8))],
    ids=["tensor", "dataset"],
)
def test_empty_dataset(data: object) -> None:
    with pytest.raises(ValueError, match="train_data is empty"):
        Trainer(make_model(), data, config=make_config())
    with pytest.raises(ValueError, match="eval_data is empty"):
        Trainer(make_model(), make_dataset(32), eval_data=data, config=make_config())


def test_empty_dataloader() -> None:
    loader = DataLoader(TensorDataset(torch.empty(0, 1, 8, 8)), batch_size=4)
    with pytest.raises(ValueError, match="train_data is empty"):
        Trainer(make_model(), loader, config=make_config())


def test_too_few_examples_for_one_batch_with_drop_last() -> None:
    trainer = Trainer(make_model(), make_dataset(16), config=make_config(drop_last=True))
    with pytest.raises(ValueError, match="fewer than batch_size=32 with drop_last=True"):
        trainer.fit()


@pytest.mark.parametrize("kind", ["memory", "dataset", "dataloader"])
def test_wrong_shape_names_the_dataset_and_shapes(kind: str) -> None:
    x = torch.rand(64, 1, 8, 9)
    data = {
        "memory": TensorDataset(x),
        "dataset": PlainDataset(x),
        "dataloader": DataLoader(PlainDataset(x), batch_size=16),
    }[kind]
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, make_dataset(64), eval_data=data, config=make_config())
    with pytest.raises(ValueError, match=r"eval_data.*expected x of shape \(B, 1, 8, 8\)"):
        trainer.fit()
    with pytest.raises(ValueError, match=r"\(\d+, 1, 8, 9\)"):
        trainer.fit()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "no step taken"
    with pytest.raises(ValueError, match=r"^train_data.*expected x of shape"):
        Trainer(make_model(), data, config=make_config()).fit()


def test_flat_vectors_for_an_image_model_suggest_a_reshape() -> None:
    data = TensorDataset(torch.rand(64, 64))
    with pytest.raises(ValueError, match=r"train_data: expected x of shape.*reshape"):
        Trainer(make_model(), data, config=make_config()).fit()


@pytest.mark.parametrize("kind", ["memory", "dataset"])
def test_nan_in_the_data(kind: str) -> None:
    x, _ = make_images(64)
    x[37, 0, 3, 3] = float("nan")
    data = TensorDataset(x) if kind == "memory" else PlainDataset(x)
    with pytest.raises(ValueError, match=r"train_data.*NaN or Inf"):
        Trainer(make_model(), data, config=make_config()).fit()


def test_nan_in_a_later_batch_of_a_loader_names_the_batch(tmp_path: Path) -> None:
    x, _ = make_images(64)
    x[50] = float("nan")  # batch 1 with batch_size 32 and no shuffling
    loader = DataLoader(PlainDataset(x), batch_size=32)
    config = make_config(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="train_data batch 1: x contains NaN"):
        Trainer(make_model(), loader, config=config).fit()


def test_values_outside_the_likelihood_support() -> None:
    data = TensorDataset(torch.rand(64, 1, 8, 8) * 255)
    with pytest.raises(ValueError, match=r"train_data.*Bernoulli targets must lie in \[0, 1\]"):
        Trainer(make_model(), data, config=make_config()).fit()


def test_integer_images_and_wrong_float_dtype() -> None:
    data = TensorDataset((torch.rand(64, 1, 8, 8) * 255).to(torch.uint8))
    with pytest.raises(TypeError, match=r"train_data.*floating-point x.*x.float\(\) / 255"):
        Trainer(make_model(), data, config=make_config()).fit()
    data64 = TensorDataset(torch.rand(64, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"float64 but the model's parameters are torch\.float32"):
        Trainer(make_model(), data64, config=make_config()).fit()


def test_conditional_model_without_labels() -> None:
    model = make_model(num_classes=4)
    with pytest.raises(ValueError, match=r"conditional.*train_data has no labels"):
        Trainer(model, make_dataset(64), config=make_config()).fit()
    with pytest.raises(ValueError, match=r"conditional.*yield \(x, label\) pairs"):
        Trainer(model, PlainDataset(make_images(64)[0]), config=make_config()).fit()


def test_labels_out_of_range() -> None:
    x, _ = make_images(64)
    data = TensorDataset(x, torch.full((64,), 7))
    with pytest.raises(ValueError, match=r"train_data: labels must be in \[0, 4\)"):
        Trainer(make_model(num_classes=4), data, config=make_config()).fit()


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"output_dir .* is not a writable directory"):
        Trainer(make_model(), make_dataset(64), config=make_config(output_dir=str(blocker / "x")))


def test_bare_tensor_and_other_objects() -> None:
    with pytest.raises(TypeError, match="TensorDataset"):
        Trainer(make_model(), torch.rand(8, 1, 8, 8), config=make_config())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="map-style Dataset"):
        Trainer(make_model(), 42, config=make_config())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"vaekit\.VAE"):
        Trainer(torch.nn.Linear(2, 2), make_dataset(8), config=make_config())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(make_model(), make_dataset(8), config={"lr": 1})  # type: ignore[arg-type]


def test_batches_that_are_not_tensors() -> None:
    class Strings(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> str:
            return "x"

    match = r"train_data batch 0: expected a tensor or an \(x, label\)"
    with pytest.raises(TypeError, match=match):
        Trainer(make_model(), Strings(), config=make_config()).fit()


def test_unavailable_device() -> None:
    acc = torch.accelerator.current_accelerator(check_available=True)
    spec = "cuda" if acc is None else f"{acc.type}:99"
    with pytest.raises(ValueError, match=r"not available|device\(s\)"):
        Trainer(make_model(), make_dataset(8), config=TrainConfig(device=spec))


def test_memory_path_refused_for_other_datasets() -> None:
    data = PlainDataset(make_images(32)[0])
    with pytest.raises(ValueError, match="data_path='memory' needs an in-memory tensor dataset"):
        Trainer(make_model(), data, config=make_config(data_path="memory")).fit()
