"""Hostile inputs and faults: the command line's contract, checked on each.

Refusals: exit status 2, exactly one line on stderr, no traceback, no output file and no
temporary left behind (the folders hold what they held before). No checkpoint or backbone
load ever unpickles anything (:func:`no_pickle`, for every test here and in the files that
import it). Elsewhere: training commands and a killed run (test_hostile_training.py), odd but
valid inputs (test_hostile_valid_inputs.py), DICOM, folders and options (test_hostile_*.py).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_la_dinov2.cli import main
from tests.conftest import TINY_UNET_KWARGS, TINY_UNET_PREPROCESSING, synthetic_case
from tests.test_distributed import write_case_folder

SHAPE = (40, 36, 6)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


@pytest.fixture(autouse=True)
def no_pickle(monkeypatch):
    """Fail the test if anything unpickles: torch.load, pickle.load(s), pickle.Unpickler."""

    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle a file")

    class ForbiddenUnpickler(pickle.Unpickler):  # a class: libraries subclass it on import
        def __init__(self, *args, **kwargs):
            forbidden()

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", ForbiddenUnpickler)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("image")
    volume, _ = synthetic_case(SHAPE)
    nib.save(nib.Nifti1Image(volume, AFFINE), folder / "s.nii.gz")
    return folder / "s.nii.gz"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny UNet checkpoint (config.json + model.safetensors)."""
    from napari_la_dinov2 import build_model
    from napari_la_dinov2.models import save_checkpoint

    folder = tmp_path_factory.mktemp("ck") / "unet"
    torch.manual_seed(0)
    model = build_model("unet", preprocessing=TINY_UNET_PREPROCESSING, **TINY_UNET_KWARGS)
    return save_checkpoint(model, folder)


def snapshot(*folders) -> dict:
    """Every file under ``folders`` with its size and modification time."""
    found = {}
    for folder in folders:
        for path in Path(folder).rglob("*"):
            stat = path.stat()
            found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def refused(argv, capfd, *folders, message=None) -> str:
    """Run the command: exit 2, one line on stderr, no traceback, ``folders`` unchanged."""
    before = snapshot(*folders)
    code = main([str(a) for a in argv])
    err = capfd.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("la-dinov2: error: ")
    if message:
        assert message in err, err
    assert snapshot(*folders) == before
    return err


# --- Checkpoints: hostile configs, pickled or unofficial backbones ----------------------------


class _SetsFlag:
    """Unpickling this creates the file ``flag``: proof that something unpickled."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (Path.touch, (self.flag,))


def pickled_backbone(folder: Path) -> Path:
    """A DINOv2 folder holding config.json and a pytorch_model.bin whose unpickling would set a
    flag file beside it."""
    from transformers import Dinov2Config

    from tests.conftest import TINY_DINOV2_CONFIG

    folder.mkdir(parents=True, exist_ok=True)
    Dinov2Config(**TINY_DINOV2_CONFIG).save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"x": _SetsFlag(folder / "FLAG")}))
    return folder


def _set(path, value):
    def edit(config):
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


HOSTILE_CONFIGS = {
    "a JSON list": (lambda c: [c], "must hold a JSON object"),
    "input_size 8": (_set(("preprocessing", "input_size"), 8), "input_size"),
    "input_size 100000": (_set(("preprocessing", "input_size"), 100000), "input_size"),
    "input_size as text": (_set(("preprocessing", "input_size"), "64"), "input_size"),
    "context -1": (_set(("preprocessing", "context"), -1), "context"),
    "3 channels into 1": (_set(("preprocessing", "context"), 1), "do not fit"),
    "10^6 members": (
        lambda c: c.update(model="unet_ensemble") or c["model_kwargs"].update(members=10**6),
        "1 to 16 members",
    ),
    "widths 1e9": (
        lambda c: c["model_kwargs"].update(channels=[10**9, 10**9], strides=[2]),
        "widths",
    ),
    "widths 1e5": (
        lambda c: c["model_kwargs"].update(channels=[10**5, 10**5], strides=[2]),
        "parameters",
    ),
    "10^6 backbone layers": (
        lambda c: c.update(
            model="dinov2_vits14",
            model_kwargs={"backbone_config": {"hidden_size": 64, "num_hidden_layers": 10**6}},
            preprocessing=None,
        ),
        "num_hidden_layers",
    ),
    "200 UNet levels": (
        lambda c: c["model_kwargs"].update(channels=[8] * 200, strides=[1] * 199),
        "channels must list",
    ),
    "a width as text": (_set(("model_kwargs", "num_res_units"), "x"), "model_kwargs"),
    "preprocessing a list": (_set(("preprocessing",), [1]), "preprocessing"),
    "giant without its weights": (
        lambda c: c.update(model="dinov2_vitg14", model_kwargs={}, preprocessing=None),
        "tensors are missing",
    ),
    "unofficial hub backbone": (
        lambda c: c.update(
            model="dinov2_vits14",
            model_kwargs={"backbone_source": "evil/dinov2"},
            preprocessing=None,
        ),
        "--backbone-source",
    ),
    "unofficial ResNet50 weights": (
        lambda c: c.update(
            model="res50_unet", model_kwargs={"weights_source": "/tmp/x"}, preprocessing=None
        ),
        "--backbone-source",
    ),
}


def hostile_checkpoint(base: Path, folder: Path, edit) -> Path:
    shutil.copytree(base, folder)
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    config = edit(config) or config
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("case", list(HOSTILE_CONFIGS))
def test_hostile_checkpoint_config_is_refused(case, image, checkpoint, tmp_path, capfd):
    edit, message = HOSTILE_CONFIGS[case]
    folder = hostile_checkpoint(checkpoint, tmp_path / "ck", edit)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["segment", image, "--out", out / "m.nii.gz", "--checkpoint", folder, "--device", "cpu"]
    refused(argv, capfd, out, folder, message=message)


def test_checkpoint_naming_a_pickled_backbone_folder(image, checkpoint, tmp_path, capfd):
    """A checkpoint that names a local folder with only pytorch_model.bin: refused without
    --backbone-source; with it, the checkpoint's own weights decide and nothing unpickles."""
    evil = pickled_backbone(tmp_path / "evil")
    edit = lambda c: c.update(  # noqa: E731
        model="dinov2_vits14",
        preprocessing=None,
        model_kwargs={"backbone_source": str(evil), "pretrained": True},
    )
    folder = hostile_checkpoint(checkpoint, tmp_path / "ck", edit)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["segment", image, "--out", out / "m.nii.gz", "--checkpoint", folder, "--device", "cpu"]
    refused(argv, capfd, out, evil, message="not an official repo")
    refused([*argv, "--backbone-source", evil], capfd, out, evil, message="do not fit")
    assert not (evil / "FLAG").exists()


def test_a_pickled_only_backbone_is_refused_everywhere(tmp_path, capfd):
    from napari_la_dinov2 import build_model
    from napari_la_dinov2.errors import InputError
    from napari_la_dinov2.models.dinov2 import load_pretrained_backbone

    evil = pickled_backbone(tmp_path / "evil")
    with pytest.raises(InputError, match="only pickled weights"):
        build_model("dinov2_vits14", backbone_source=str(evil))
    (evil / "notes.txt").write_text("x")  # our check aside, transformers itself is told
    from napari_la_dinov2.models import dinov2

    dinov2_refuse = dinov2._refuse_pickled_only
    try:
        dinov2._refuse_pickled_only = lambda source: None
        with pytest.raises(InputError, match="model.safetensors"):
            load_pretrained_backbone(str(evil), registers=False)
    finally:
        dinov2._refuse_pickled_only = dinov2_refuse
    cases = write_case_folder(tmp_path / "cases", 2)
    argv = [
        "train",
        "--cases",
        cases,
        "--model",
        "dinov2_vits14",
        "--out",
        tmp_path / "run",
        "--backbone-source",
        evil,
        "--set",
        "device=cpu",
    ]
    refused(argv, capfd, tmp_path, message="only pickled weights")
    assert not (evil / "FLAG").exists()


def test_official_backbone_names():
    from napari_la_dinov2.hub import is_official_backbone

    for size in ("small", "base", "large", "giant"):
        assert is_official_backbone(f"facebook/dinov2-{size}")
        assert is_official_backbone(f"facebook/dinov2-with-registers-{size}")
    for other in (
        "facebook/dinov2-small/../x",
        "evil/dinov2-small",
        "facebook/dinov2-huge",
        "./facebook/dinov2-small",
        "/tmp/facebook/dinov2-small",
    ):
        assert not is_official_backbone(other)


def test_an_unreachable_hub_repo_is_one_sentence(image, tmp_path, capfd, monkeypatch):
    """No network: huggingface_hub retries, but its warnings are not shown; one line."""
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["segment", image, "--out", out / "m.nii.gz", "--checkpoint", "owner/no-such-repo"]
    refused(argv, capfd, out, message="could not be loaded")


# --- Inputs that claim the impossible ----------------------------------------------------------


def _impossible_nifti(folder: Path) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.int16)
    path = folder / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4)  # 352 bytes
    return path


def _nifti(folder: Path, affine, name="x.nii.gz") -> Path:
    """A NIfTI whose sform is ``affine`` (no qform: nibabel cannot store a singular one)."""
    volume, _ = synthetic_case(SHAPE)
    image = nib.Nifti1Image(volume, np.eye(4))
    image.set_qform(None, code=0)
    image.set_sform(affine, code=2)
    nib.save(image, folder / name)
    return folder / name


def _huge_gz(folder: Path) -> Path:
    """A small gzip NIfTI whose header claims more than any compression could hold."""
    import gzip

    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    path = folder / "huge.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 1000))
    return path


def _nhdr_outside(folder: Path) -> Path:
    path = folder / "x.nhdr"
    path.write_text(
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 8 8 8\nencoding: raw\n"
        "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
        "data file: ../../../../../../../../etc/passwd\n\n"
    )
    return path


def _huge_nrrd(folder: Path) -> Path:
    path = folder / "huge.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: int16\nendian: little\ndimension: 3\nsizes: 30000 30000 30000\nencoding: raw\n"
        b"space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n\n"
        + b"\0"
        * 64
    )
    return path


IMPOSSIBLE_INPUTS = {
    "header claims 30000^3 voxels": (_impossible_nifti, "header claims"),
    "gzip claims beyond any ratio": (_huge_gz, "header claims"),
    "NRRD claims 30000^3 voxels": (_huge_nrrd, "header claims"),
    "singular affine": (lambda f: _nifti(f, np.diag([1.0, 1.0, 0.0, 1.0])), "singular"),
    "sheared to one plane": (
        lambda f: _nifti(f, np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])),
        "singular",
    ),
    "10^6 mm voxels": (lambda f: _nifti(f, np.diag([1e6, 1.0, 2.0, 1.0])), "voxel size"),
    "1e-4 mm voxels": (lambda f: _nifti(f, np.diag([1e-4, 1.0, 2.0, 1.0])), "voxel size"),
    "nhdr data file outside": (_nhdr_outside, "outside its own folder"),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE_INPUTS))
def test_impossible_input_is_refused(case, tmp_path, capfd, no_model_load):
    make, message = IMPOSSIBLE_INPUTS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    source = make(folder)
    out = tmp_path / "out"
    out.mkdir()
    refused(["segment", source, "--out", out / "m.nii.gz"], capfd, out, folder, message=message)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "meta"], "unknown device"),
        (["--device", "xpu"], "unknown device"),
        (["--device", "cuda:x"], "unknown device"),
        (["--device", ""], "unknown device"),
        (["--device", "cuda:7"], "CUDA GPU"),  # none here, or not 8 of them
    ],
)
def test_bad_device_refused_before_loading(argv, message, image, tmp_path, capfd, no_model_load):
    out = tmp_path / "out"
    out.mkdir()
    refused(["segment", image, "--out", out / "m.nii.gz", *argv], capfd, out, message=message)


def test_empty_checkpoint_name_is_refused(image, tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    refused(
        ["segment", image, "--out", out / "m.nii.gz", "--checkpoint", ""],
        capfd,
        out,
        message="empty",
    )
