"""The ``vaekit`` command line: every subcommand on a tiny run, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from torchvision.io import read_image

import vaekit
from vaekit.cli import main

TINY_TRAIN = [
    "train",
    "--dataset", "shapes",
    "--dataset-kwargs", '{"image_size": 16, "num_positions": 3, "num_rotations": 2}',
    "--epochs", "1",
    "--batch-size", "64",
    "--latent-dim", "2",
    "--conv.channels", "[4, 8]",
    "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main([*TINY_TRAIN, "--output-dir", str(out)]) == 0
    return out


def test_train_leaves_model_metrics_and_pictures(run_dir: Path) -> None:
    model = vaekit.AutoVAE.from_pretrained(run_dir)
    assert isinstance(model, vaekit.ConvVAE)
    assert model.latent_dim == 2 and model.input_shape == (1, 16, 16)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert any("train_loss" in json.loads(line) for line in lines)
    for name in ("loss_curve.png", "samples.png", "reconstructions.png", "traversals.png"):
        image = read_image(str(run_dir / "pictures" / name))
        assert image.shape[0] in (3, 4) and image.shape[1] > 16


def test_train_resume_continues_the_run(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    assert main([*TINY_TRAIN, "--output-dir", str(out)]) == 0
    args = [a if a != "1" else "2" for a in TINY_TRAIN]  # --epochs 2
    assert main([*args, "--output-dir", str(out), "--resume"]) == 0
    epochs = [
        json.loads(line).get("epoch") for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert max(e for e in epochs if e is not None) == 2


def test_evaluate_prints_metrics_and_json(run_dir: Path, capsys) -> None:
    code = main(
        ["evaluate", str(run_dir), "--dataset", "shapes", "--num-samples", "8", "--limit", "32",
         "--dataset-kwargs", '{"image_size": 16}', "--json"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["num_examples"] == 32 and metrics["num_samples"] == 8
    assert metrics["nll"] <= -metrics["elbo"] + 1.0  # IS estimate no looser than the ELBO
    assert "ELBO" in out and "bits/dim" in out


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--num", "9"],
        ["reconstruct", "--dataset", "shapes", "--num", "4"],
        ["interpolate", "--dataset", "shapes", "--steps", "5", "--method", "slerp"],
        ["traverse", "--steps", "5"],
        ["latent-plot", "--dataset", "shapes", "--max-points", "100"],
    ],
)
def test_picture_commands_write_pngs(run_dir: Path, tmp_path: Path, args) -> None:
    out = tmp_path / "picture.png"
    extra = ["--dataset-kwargs", '{"image_size": 16}'] if "--dataset" in args else []
    assert main([args[0], str(run_dir), *args[1:], *extra, "--out", str(out)]) == 0
    assert read_image(str(out)).shape[1] > 16
    if args[0] == "latent-plot":  # a 2-D latent also gets the manifold grid
        assert (tmp_path / "picture_manifold.png").is_file()


def test_info(run_dir: Path, capsys) -> None:
    assert main(["info", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "ConvVAE" in out and '"latent_dim": 2' in out and "parameters" in out


def test_push_uploads_the_run_folder(run_dir: Path, monkeypatch) -> None:
    from huggingface_hub import HfApi

    uploaded = {}
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id)
    )

    def fake_upload(self, *, repo_id, folder_path, **kwargs):
        uploaded.update(repo_id=repo_id, files=sorted(p.name for p in Path(folder_path).iterdir()))
        return "https://example.invalid/commit/1"

    monkeypatch.setattr(HfApi, "upload_folder", fake_upload)
    assert main(["push", str(run_dir), "user/tiny-vae", "--token", "hf_test"]) == 0
    assert uploaded["repo_id"] == "user/tiny-vae"
    assert {"config.json", "model.safetensors", "README.md"} <= set(uploaded["files"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "nope", "--epochs", "1"], "unknown dataset 'nope'"),
        (["sample", "/no/such/run"], "no such directory"),
        (["evaluate", "./missing-run", "--dataset", "shapes"], "no such directory"),
    ],
)
def test_errors_are_one_line_without_traceback(argv, message, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "vaekit.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_dir_without_model_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "empty-run").mkdir()
    assert main(["push", str(tmp_path / "empty-run"), "user/x"]) != 0
    assert "holds no model" in capsys.readouterr().err


def test_unknown_model_choice_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "transformer"])
    assert exit_info.value.code != 0


def test_console_script_is_declared() -> None:
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'vaekit = "vaekit.cli:main"' in text


@pytest.mark.parametrize(
    "config",
    sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml")),
)
def test_benchmark_recipes_parse(config: Path) -> None:
    from vaekit.cli import build_parser

    args = build_parser().parse_args(["train", "--config", str(config)])
    train_args = {k: v for k, v in vars(args.train.train).items() if k != "__path__"}
    assert vaekit.TrainConfig(**train_args).max_epochs >= 1
