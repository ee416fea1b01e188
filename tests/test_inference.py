"""Volume inference: geometry (slice axis, ROI, alignment), batching, progress, cancel, OOM."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from napari_la_dinov2.errors import (
    CancelledError,
    InputError,
)
from napari_la_dinov2.inference import (
    Predictor,
    RegionOfInterest,
    autocast_dtype,
    resolve_device,
)
from napari_la_dinov2.models import build_model, load_model
from napari_la_dinov2.scoring.metrics import dice
from napari_la_dinov2.volume_files import (
    VolumeMeta,
    read_labels,
    read_labels_with_meta,
    read_volume,
    write_labels,
)
from tests.conftest import TINY_UNET_KWARGS, synthetic_case


class IntensityNet(nn.Module):
    """A deterministic network in place of a trained one: each output pixel is a function of the
    same input pixel only (bright -> foreground), so where the mask lands shows where the
    pipeline put each voxel. ``constant`` instead gives the same logit everywhere. Counts its
    calls and batch sizes."""

    def __init__(self, constant: float | None = None):
        super().__init__()
        self.constant = constant
        self.calls = 0
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        if self.constant is not None:
            return torch.full_like(x[:, :1], self.constant)
        return 20.0 * x[:, :1]  # ImageNet-normalised: 0 is about mid-grey (0.485)


def real_model(net: nn.Module, *, fit="pad", size=64, context=0, provenance=None):
    """A real model (an ``LASegmenter`` from the registry, with its preprocessing, branches and
    provenance) whose network is ``net``: a tiny UNet is built for the input, then its ``net``
    is swapped for the test network and the branches are rebuilt to point at it."""
    preprocessing = dict(input_size=size, intensity="imagenet", context=context, fit=fit)
    model = build_model("unet", preprocessing=preprocessing, **TINY_UNET_KWARGS)
    model.net = net
    model.branches = model._branches()
    model.provenance.update(provenance or {})
    return model


def intensity_model(fit="pad", size=64, constant: float | None = None):
    """A real model around an :class:`IntensityNet` (``model.net`` keeps its counters)."""
    return real_model(IntensityNet(constant), fit=fit, size=size)


def bright_box_volume(shape=(40, 33, 21), box=(slice(5, 17), slice(20, 30), slice(3, 9))):
    """Dark noisy volume with an off-centre bright box: any flip or transpose would miss it."""
    rng = np.random.default_rng(0)
    volume = rng.uniform(0, 60, size=shape).astype(np.float32)
    truth = np.zeros(shape, np.uint8)
    truth[box] = 1
    volume[truth > 0] = 220.0
    return volume, truth


def _meta_with_slice_axis(shape, axis):
    spacing = [0.625, 0.625, 0.625]
    spacing[axis] = 2.5
    return VolumeMeta.from_spacing(shape, spacing)


def test_output_is_uint8_on_the_input_grid(tiny_unet, synthetic):
    volume, _ = synthetic
    mask = Predictor(tiny_unet, device="cpu").predict(volume, VolumeMeta.from_spacing(volume.shape))
    assert mask.dtype == np.uint8 and mask.shape == volume.shape
    assert set(np.unique(mask)) <= {0, 1}


@pytest.mark.parametrize("fit", ["pad", "stretch"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_bright_region_maps_to_the_same_voxels(fit, axis):
    volume, truth = bright_box_volume()
    meta = _meta_with_slice_axis(volume.shape, axis)
    assert meta.through_plane_axis() == axis
    # (no opening: with its 3x3 cross it rounds off a box's corner voxels, by design)
    predictor = Predictor(
        intensity_model(fit=fit, size=64), device="cpu", batch_size=4, morphology=False
    )
    mask = predictor.predict(volume, meta)
    np.testing.assert_array_equal(mask, truth)


def test_post_processing_switches():
    volume, truth = bright_box_volume()
    volume[35:38, 2:5, 15:18] = 220.0  # a 27-voxel island away from the box
    island = np.zeros_like(truth)
    island[35:38, 2:5, 15:18] = 1
    raw = Predictor(intensity_model(), device="cpu", morphology=False, largest_cc=False)
    np.testing.assert_array_equal(raw.predict(volume), truth | island)
    largest = Predictor(intensity_model(), device="cpu", morphology=False, largest_cc=True)
    np.testing.assert_array_equal(largest.predict(volume), truth)
    cleaned = Predictor(intensity_model(), device="cpu").predict(volume)  # opening + closing
    assert dice(cleaned, truth) > 0.97 and cleaned[island > 0].sum() == 0


def probabilities(predictor: Predictor, volume, meta=None, **kwargs) -> np.ndarray:
    """Level 1 then level 2: the foreground probability of ``volume``."""
    return predictor.probabilities(predictor.prepare(volume, meta))


def test_slice_axis_from_the_affine_and_overridable():
    volume, _ = bright_box_volume()
    predictor = Predictor(intensity_model(), device="cpu")
    for axis in (0, 1, 2):
        totals = []
        prepared = predictor.prepare(volume, _meta_with_slice_axis(volume.shape, axis))
        probs = predictor.probabilities(prepared, progress=lambda d, t: totals.append(t))  # noqa: B023
        assert prepared.slice_axis == axis and prepared.axes == (axis,)
        assert prepared.slices[0].shape[0] == volume.shape[axis]
        assert totals[-1] == volume.shape[axis] and probs.shape == volume.shape
        assert probs.dtype == np.float32
    meta = _meta_with_slice_axis(volume.shape, 1)
    assert predictor.prepare(volume, meta, slice_axis=0).slice_axis == 0
    assert predictor.prepare(volume).slice_axis == 2  # no meta
    with pytest.raises(InputError, match="slice axis"):
        predictor.predict(volume, meta, slice_axis=3)
    with pytest.raises(InputError, match="3D volume"):
        predictor.predict(volume[0], meta)


def test_roi_outside_is_zero_and_inside_is_the_models():
    volume, _ = bright_box_volume()
    meta = _meta_with_slice_axis(volume.shape, 1)  # in-plane axes are 0 and 2
    predictor = Predictor(
        intensity_model(constant=10.0), device="cpu", morphology=False, largest_cc=False
    )
    roi = RegionOfInterest.parse("4:30,2:15,10:20")  # rows = axis 0, cols = axis 2, slices = 1
    mask = predictor.predict(volume, meta, roi=roi)
    expected = np.zeros(volume.shape, np.uint8)
    expected[4:30, 10:20, 2:15] = 1
    np.testing.assert_array_equal(mask, expected)
    # A box running past the volume is clipped to it, not refused.
    mask = predictor.predict(volume, meta, roi=RegionOfInterest(box=(30, 99, -5, 12)))
    expected = np.zeros(volume.shape, np.uint8)
    expected[30:40, :, 0:12] = 1
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(
    "roi, phrase",
    [
        (RegionOfInterest(box=(0, 5, 0, 20)), "leaves nothing"),  # 5 rows < 8
        (RegionOfInterest(slices=(30, 40)), "leaves nothing"),  # past the 21 slices
        (RegionOfInterest(box=(50, 60, 0, 20)), "leaves nothing"),  # outside the volume
    ],
)
def test_bad_roi_is_an_input_error(roi, phrase):
    volume, _ = bright_box_volume()
    with pytest.raises(InputError, match=phrase):
        Predictor(intensity_model(), device="cpu").predict(volume, roi=roi)


@pytest.mark.parametrize("text", ["1:2", "a:b,c:d", "1:5,2:9,3", "1:5;2:9", ""])
def test_bad_roi_text_is_an_input_error(text):
    with pytest.raises(InputError, match="r0:r1,c0:c1"):
        RegionOfInterest.parse(text)


def test_progress_goes_from_zero_to_total():
    volume, _ = bright_box_volume()  # 21 slices along axis 2
    calls = []
    Predictor(intensity_model(), device="cpu", batch_size=8).predict(
        volume, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(0, 21), (8, 21), (16, 21), (21, 21)]


def test_cancel_stops_within_one_batch():
    volume, _ = bright_box_volume()
    model = intensity_model()
    stop = threading.Event()
    predictor = Predictor(model, device="cpu", batch_size=4)
    with pytest.raises(CancelledError, match="4 of 21"):
        predictor.predict(volume, progress=lambda done, total: done and stop.set(), cancel=stop)
    assert model.net.calls == 1  # the batch in flight finished, no other started

    model.net.calls = 0
    with pytest.raises(CancelledError):
        Predictor(model, device="cpu").predict(volume, cancel=lambda: True)
    assert model.net.calls == 0


def test_batch_size_does_not_change_the_result(tiny_dinov2):
    volume, _ = synthetic_case(shape=(30, 26, 7))
    reference = probabilities(Predictor(tiny_dinov2, device="cpu", batch_size=1), volume)
    for batch_size in (3, 16):
        probs = probabilities(Predictor(tiny_dinov2, device="cpu", batch_size=batch_size), volume)
        np.testing.assert_allclose(probs, reference, atol=1e-5)


def test_batch_size_does_not_change_the_result_with_padding(tiny_unet):
    # Slices of different brightness: a padded slice must not take its padding value from the
    # other slices of its batch.
    volume, _ = synthetic_case(shape=(40, 64, 8))
    volume += np.arange(8, dtype=np.float32) * 15.0
    reference = probabilities(Predictor(tiny_unet, device="cpu", batch_size=1), volume)
    probs = probabilities(Predictor(tiny_unet, device="cpu", batch_size=8), volume)
    np.testing.assert_allclose(probs, reference, atol=1e-5)


def test_out_of_memory_halves_the_batch_and_goes_on(tiny_unet, synthetic):
    volume, _ = synthetic
    expected = Predictor(tiny_unet, device="cpu", batch_size=8).predict(volume)
    # The Predictor runs each branch's network (here the one UNet): make it fail once.
    assert tiny_unet.branches[0].net is tiny_unet.net
    forward = tiny_unet.net.forward
    state = {"raised": False, "sizes": []}

    def forward_once_oom(x):
        state["sizes"].append(x.shape[0])
        if not state["raised"]:
            state["raised"] = True
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return forward(x)

    tiny_unet.net.forward = forward_once_oom
    predictor = Predictor(tiny_unet, device="cpu", batch_size=8)
    calls = []
    with pytest.warns(RuntimeWarning, match="batch size halved to 4"):
        mask = predictor.predict(volume, progress=lambda d, t: calls.append(d))
    assert predictor.batch_size == 4
    assert state["sizes"] == [8, 4, 4, 4]  # 12 slices: the failed batch of 8, then 4 + 4 + 4
    assert calls == [0, 4, 8, 12]
    np.testing.assert_array_equal(mask, expected)

    def always_oom(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    tiny_unet.net.forward = always_oom
    with pytest.warns(RuntimeWarning), pytest.raises(torch.cuda.OutOfMemoryError):
        Predictor(tiny_unet, device="cpu", batch_size=2).predict(volume)


class ShiftRampNet(nn.Module):
    """A network that is not left-right symmetric: the image moved 3 columns to the right
    (wrapping round) plus a ramp rising from left to right. Mirroring its input does not
    mirror its output, so flip averaging must change what it predicts."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-2.0, 1.0, x.shape[-1])
        return 0.5 * torch.roll(x[:, :1], shifts=3, dims=-1) + ramp


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(p) - np.log1p(-p)


def test_flip_tta_averages_with_the_mirrored_prediction_of_the_mirrored_input():
    # 64x64 slices (axis 2) into a 64x64 input: neither padded nor resized, so mirroring a
    # slice's columns (volume axis 1) is exactly mirroring the network's input.
    box = (slice(10, 30), slice(40, 60), slice(1, 4))
    volume, _ = bright_box_volume(shape=(64, 64, 5), box=box)
    model = real_model(ShiftRampNet(), size=64)
    plain = Predictor(model, device="cpu", flip_tta=False)
    own = probabilities(plain, volume)
    mirrored = probabilities(plain, volume[:, ::-1])[:, ::-1]  # of the mirrored input, mirrored
    averaged = probabilities(Predictor(model, device="cpu", flip_tta=True), volume)
    expected = 1.0 / (1.0 + np.exp(-(_logit(own) + _logit(mirrored)) / 2))
    np.testing.assert_allclose(averaged, expected, atol=1e-5)
    # and it is not the plain prediction: the ramp (-2 on the left, +1 on the right) is
    # averaged to -0.5 everywhere
    assert np.abs(averaged - own).max() > 0.2
    assert np.abs(_logit(averaged) - _logit(own))[:, 0].mean() == pytest.approx(1.5, abs=0.01)


def test_predictor_arguments_and_devices():
    with pytest.raises(InputError, match="batch size"):
        Predictor(intensity_model(), device="cpu", batch_size=0)
    with pytest.raises(InputError, match="threshold"):
        Predictor(intensity_model(), device="cpu", threshold=1.0)
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("banana")
    assert autocast_dtype(torch.device("cpu"), "auto") is None  # fp32 on CPUs
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")


def _real_crop(real_data_dir, real_case_ids, slices=6):
    case = real_case_ids[0]
    volume, meta = read_volume(real_data_dir / "images" / f"{case}.nii.gz")
    truth = read_labels(real_data_dir / "labels" / f"{case}.nii.gz", image_meta=meta)
    centre = int(np.argwhere(truth).mean(axis=0)[2])  # the atrium's middle slice
    zs = slice(centre - slices // 2, centre + slices - slices // 2)
    crop = VolumeMeta(affine=meta.affine, shape=volume[..., zs].shape)
    return volume[..., zs], truth[..., zs], crop


@pytest.mark.realdata
def test_the_default_model_on_a_real_case_it_never_saw(real_data_dir, real_case_ids, tmp_path):
    model = load_model("default")
    case = model.unseen(real_case_ids)[0]  # in neither its training nor its validation split
    volume, meta = read_volume(real_data_dir / "images" / f"{case}.nii.gz")
    truth = read_labels(real_data_dir / "labels" / f"{case}.nii.gz", image_meta=meta)
    assert meta.through_plane_axis() == 2  # 1.25 mm slices along z
    mask = Predictor(model, device="cpu").predict(volume, meta)
    assert mask.dtype == np.uint8 and mask.shape == volume.shape == tuple(meta.shape)
    assert set(np.unique(mask)) == {0, 1}
    assert dice(mask, truth > 0) > 0.85  # the model card reports 0.91 on average
    # The contract: a mask saved for the image lies on the image's grid, affine and all.
    path = write_labels(tmp_path / f"{case}_mask.nii.gz", mask, meta)
    saved, saved_meta = read_labels_with_meta(path, image_meta=meta)
    np.testing.assert_array_equal(saved, mask)
    np.testing.assert_array_equal(saved_meta.affine, meta.affine)
    assert saved_meta.shape == volume.shape


@pytest.mark.realdata
@pytest.mark.parametrize("fit", ["pad", "stretch"])
def test_real_anatomy_lands_on_its_own_voxels(real_data_dir, real_case_ids, fit):
    # The real image's atrium made the brightest thing in the volume: a pixel-wise model must
    # put the mask exactly on the expert's voxels (~200x140 slices into a 256 input: enlarging).
    volume, truth, meta = _real_crop(real_data_dir, real_case_ids)
    bright = volume * (60.0 / volume.max())
    bright[truth > 0] = 255.0
    predictor = Predictor(
        intensity_model(fit=fit, size=256), device="cpu", morphology=False, largest_cc=False
    )
    mask = predictor.predict(bright, meta)
    assert dice(mask, truth) > 0.99


def test_flip_averaging_follows_the_checkpoint_unless_told():
    model = intensity_model()
    assert Predictor(model, device="cpu").flip_tta is False  # no recommendation: off
    model.provenance = {"inference": {"flip_tta": True}}
    assert Predictor(model, device="cpu").flip_tta is True
    assert Predictor(model, device="cpu", flip_tta=False).flip_tta is False


def test_2_5d_input_feeds_each_slice_with_its_neighbours():
    # 2.5D (context 1: slices before, at and after as 3 channels); the IntensityNet looks only
    # at channel 0, the slice before.
    previous_slice_model = real_model(IntensityNet(), context=1)
    assert previous_slice_model.preprocessing.channels == 3
    volume, truth = bright_box_volume()
    predictor = Predictor(
        previous_slice_model, device="cpu", batch_size=4, morphology=False, largest_cc=False
    )
    pred = predictor.predict(volume, slice_axis=0)
    # Each slice shows its predecessor's box: shifted one slice on, across batch borders too.
    expected = np.zeros_like(truth)
    expected[1:] = truth[:-1]
    assert dice(pred, expected) > 0.97
    assert pred[17].any() and not pred[5].any()
