"""The click model: the default model's three views, each UNet with three more input channels.

Each view's network sees its 2.5D image slices (as the default's member does) plus the current
mask and the positive and negative click maps of the slice (:data:`PROMPT_CHANNELS`). It starts
as the default's member with the new channels' first-layer weights at zero, so before training
it answers exactly as the default; the recipe in ``training/click_model`` then trains it on
simulated clicks. It runs on a ``CROP`` x ``CROP`` crop of the model's input around the click
(a quarter of a 192 x 192 slice), which is what makes a click fast on a CPU.

A checkpoint is a folder with ``model.safetensors`` (``member{b}.`` prefixed weights) and
``config.json`` (the default's architecture and preprocessing it was widened from, the window
and crop, and the training provenance), the same safetensors + JSON rule as every model here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..models.baselines import UNet2D
from ..models.segmenter import Branch
from ..outputs import default_permissions
from ..preprocess import Preprocessing

PROMPT_CHANNELS = ("mask", "positive", "negative")
CLICK_FORMAT = "napari-la-dinov2/clicks-1"
WINDOW_MM = 25.0  # half-size of the box a click may change, in mm along each axis
CROP = 96  # side of the crop of the model's input the networks run on
EMBEDDED = Path(__file__).resolve().parents[1] / "weights" / "la_clicks"


class ClickModel(nn.Module):
    """One widened UNet per view of ``preprocessing``; ``members[b]``: ``Bx(C+3)xSxS -> Bx1xSxS``."""

    def __init__(
        self,
        unet_kwargs: dict,
        preprocessing: Preprocessing,
        *,
        window_mm: float = WINDOW_MM,
        crop: int = CROP,
        slice_mm: float = 0.0,
        add_threshold: float = 0.5,
        remove_threshold: float = 0.5,
        provenance: dict | None = None,
    ):
        super().__init__()
        self.unet_kwargs = dict(unet_kwargs)
        self.preprocessing = preprocessing
        self.transforms = preprocessing.transforms()
        self.window_mm = float(window_mm)
        self.crop = int(crop)
        self.slice_mm = float(slice_mm)  # 0: every slice in the window; else see computed_slices
        # A positive click adds the voxels above add_threshold, a negative one removes those
        # below remove_threshold (chosen on the validation patients, see the model card).
        self.add_threshold, self.remove_threshold = float(add_threshold), float(remove_threshold)
        self.provenance = dict(provenance or {})
        channels = preprocessing.channels + len(PROMPT_CHANNELS)
        self.members = nn.ModuleList(
            UNet2D(in_channels=channels, **self.unet_kwargs) for _ in self.transforms
        )

    @classmethod
    def from_segmenter(cls, segmenter, **kwargs) -> ClickModel:
        """Widened from a trained multi-view ensemble (the default): the same weights, the new
        channels' first-layer weights zero."""
        unet_kwargs = segmenter.net.rebuild_kwargs()
        unet_kwargs.pop("members", None)
        unet_kwargs.pop("in_channels", None)
        model = cls(unet_kwargs, segmenter.preprocessing, **kwargs)
        for member, branch in zip(model.members, segmenter.branches, strict=True):
            widen_into(member, branch.net.state_dict())
        return model

    @property
    def branches(self) -> tuple[Branch, ...]:
        """One :class:`Branch` per view, as a segmenter has: the Predictor prepares with them."""
        return tuple(
            Branch(t.view, t, net) for t, net in zip(self.transforms, self.members, strict=True)
        )

    def config_dict(self) -> dict:
        return dict(
            format=CLICK_FORMAT,
            unet_kwargs=self.unet_kwargs,
            preprocessing=self.preprocessing.to_dict(),
            prompt_channels=list(PROMPT_CHANNELS),
            window_mm=self.window_mm,
            crop=self.crop,
            slice_mm=self.slice_mm,
            add_threshold=self.add_threshold,
            remove_threshold=self.remove_threshold,
            provenance=self.provenance,
        )

    def save(self, directory: str | Path, weights_dtype: torch.dtype | None = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # contiguous: a Refiner runs the networks channels-last, which safetensors cannot store
        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        if weights_dtype is not None:
            state = {
                k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()
            }
        tmp = directory / ".model.safetensors.tmp"
        save_file(state, str(tmp))
        tmp.replace(directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        for path in directory.iterdir():  # safetensors writes its file 0600
            default_permissions(path)
        return directory


def widen_into(member: nn.Module, base_state: dict) -> None:
    """Load ``base_state`` (a UNet with fewer input channels) into ``member``: tensors whose
    second dimension is the input channels get the new channels as zeros."""
    own = member.state_dict()
    merged = {}
    for key, value in base_state.items():
        target = own[key]
        value = value.to(target.dtype)
        if value.shape != target.shape:
            padded = torch.zeros_like(target)
            padded[:, : value.shape[1]] = value
            value = padded
        merged[key] = value
    member.load_state_dict(merged, strict=True)


def load_click_model(source: str | Path | None = None) -> ClickModel:
    """The embedded click model, or one saved in a folder (safetensors + config.json only)."""
    from safetensors.torch import load_file

    folder = Path(source) if source is not None else EMBEDDED
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    if not (config_file.is_file() and weights.is_file()):
        raise InputError(
            f"{folder} holds no click model (config.json and model.safetensors); "
            "train one with training/click_model or use the embedded one."
        )
    config = json.loads(config_file.read_text())
    if config.get("format") != CLICK_FORMAT:
        raise InputError(f"{folder} is not a click model (format {config.get('format')!r}).")
    model = ClickModel(
        config["unet_kwargs"],
        Preprocessing.from_dict(config["preprocessing"]),
        window_mm=config["window_mm"],
        crop=config["crop"],
        slice_mm=config.get("slice_mm", 0.0),
        add_threshold=config.get("add_threshold", 0.5),
        remove_threshold=config.get("remove_threshold", 0.5),
        provenance=config.get("provenance"),
    )
    state = load_file(str(weights))
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model.eval()
