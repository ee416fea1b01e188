"""`la-dinov2 train | fewshot | evaluate`: config file + overrides, resolved config written,
one-line errors with exit status 2."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import yaml

from napari_la_dinov2.cli import main
from napari_la_dinov2.training.train_config_file import (
    apply_overrides,
    fewshot_config_from,
    train_config_from,
)
from tests.test_distributed import tiny_unet_config, write_case_folder


def test_overrides_and_types():
    settings = apply_overrides(
        {"model_kwargs": {"channels": [4]}},
        ["lr=1e-4", "epochs=3", "augment=false", "model_kwargs.strides=[2, 2]", "split=[.6,.2,.2]"],
    )
    config = train_config_from(settings)
    assert config.lr == 1e-4 and config.epochs == 3 and config.augment is False
    assert config.model_kwargs == {"channels": [4], "strides": [2, 2]}
    assert config.split == (0.6, 0.2, 0.2)
    fewshot = fewshot_config_from({"patients": [1, "all"], "train": {"epochs": 2}})
    assert fewshot.patients == [1, "all"] and fewshot.train.epochs == 2
    from napari_la_dinov2.errors import InputError

    with pytest.raises(InputError, match="did you mean 'epochs'"):
        train_config_from({"epoch": 3})
    with pytest.raises(InputError, match="TrainConfig.epochs: input should be a valid integer"):
        train_config_from({"epochs": 2.5})


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return write_case_folder(tmp_path_factory.mktemp("cases"), 3)


def test_train_writes_resolved_config_and_resumes(cases, tmp_path, capsys):
    config = tiny_unet_config(tmp_path / "cfg.yaml", split=[0.67, 0.33, 0.0])
    out = tmp_path / "run"
    args = ["train", "--cases", str(cases), "--config", str(config), "--out", str(out)]
    assert main([*args, "--set", "epochs=1", "seed=3"]) == 0
    resolved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert resolved["epochs"] == 1 and resolved["seed"] == 3 and resolved["lr"] == 1e-3
    assert resolved["output_dir"] == str(out) and resolved["model_kwargs"]["channels"] == [
        8,
        16,
        32,
    ]
    assert "best validation Dice" in capsys.readouterr().out

    # The run's own config.json is a valid --config: resume two more epochs from last/.
    rerun = ["train", "--cases", str(cases), "--config", str(out / "config.json")]
    assert main([*rerun, "--out", str(out), "--resume", "--set", "epochs=3"]) == 0
    history = (out / "history.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "lr=fast"], "TrainConfig.lr: input should be a valid number"),
        (["--set", "feature_cache=on"], "feature_cache 'on' needs a DINOv2 model"),
        (["--set", "lr=.nan"], "lr a positive number"),
        (["--set", "loss=dice"], "loss must be"),
        (["--set", "nonsense"], "key=value"),
        (["--model", "no_such_model"], "no_such_model"),
    ],
)
def test_train_bad_input_is_one_line_and_exit_2(cases, tmp_path, capsys, extra, message):
    config = tiny_unet_config(tmp_path / "cfg.yaml")
    args = ["train", "--cases", str(cases), "--config", str(config), "--out", str(tmp_path / "r")]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_fewshot_command(cases, tmp_path, capsys):
    config = tmp_path / "fs.yaml"
    train = yaml.safe_load(
        tiny_unet_config(tmp_path / "t.yaml", epochs=1).read_text(encoding="utf-8")
    )
    train.pop("split")
    config.write_text(yaml.safe_dump({"split": [0.34, 0.0, 0.66], "train": train}))
    out = tmp_path / "fs"
    code = main(
        [
            "fewshot",
            "--cases",
            str(cases),
            "--config",
            str(config),
            "--patients",
            "1",
            "--seeds",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "| unet | 1 patients | 1 | 1 |" in capsys.readouterr().out
    assert yaml.safe_load((out / "fewshot_config.yaml").read_text(encoding="utf-8"))[
        "patients"
    ] == [1]
    with (out / "results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2  # two test cases
    assert main(["fewshot", "--cases", str(cases), "--patients", "0", "--out", str(out)]) == 2


def test_evaluate_files_and_folders(tmp_path, capsys):
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    truth = np.zeros((20, 20, 4), np.uint8)
    truth[5:15, 5:15, 1:3] = 1
    pred = truth.copy()
    pred[5:15, 5:10, 1:3] = 0  # half of it
    for folder, mask in (("gt", truth), ("pred", pred)):
        (tmp_path / folder).mkdir()
        for name in ("a", "b"):
            nib.save(nib.Nifti1Image(mask, affine), tmp_path / folder / f"{name}.nii.gz")
    assert main(["evaluate", str(tmp_path / "pred/a.nii.gz"), str(tmp_path / "gt/a.nii.gz")]) == 0
    line = capsys.readouterr().out.splitlines()[1].split("\t")
    assert line[0] == "a" and float(line[1]) == pytest.approx(2 * 100 / 300, abs=1e-4)
    csv_out, md_out = tmp_path / "m.csv", tmp_path / "m.md"
    code = main(
        [
            "evaluate",
            str(tmp_path / "pred"),
            str(tmp_path / "gt"),
            "--csv",
            str(csv_out),
            "--markdown",
            str(md_out),
            "--name",
            "mine",
        ]
    )
    assert code == 0
    assert "mean ± SD over 2 cases: Dice 0.6667 ± 0.0000" in capsys.readouterr().out
    with csv_out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case"] for r in rows] == ["a", "b"]
    assert float(rows[0]["volume_ml_pred"]) == pytest.approx(100 * 0.5 / 1000)  # 0.5 mm^3 voxels
    assert "| mine | 2 | 66.7 ± 0.0 [66.7, 66.7] | 50.0 ± 0.0 [50.0, 50.0] |" in md_out.read_text(
        encoding="utf-8"
    )
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt/a.nii.gz")]) == 2
    assert "one of each" in capsys.readouterr().err
