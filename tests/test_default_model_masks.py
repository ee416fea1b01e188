"""The embedded default model's masks on the 8 test patients of its model card, stored before
the engine's renovation (tests/data/default_model_test_masks.*). Any change to preprocessing,
inference or post-processing that moves a voxel of these masks shows here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from napari_la_dinov2 import read_volume
from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.models import load_model
from napari_la_dinov2.scoring.metrics import dice

DATA = Path(__file__).parent / "data"
HASHES = json.loads((DATA / "default_model_test_masks.sha256.json").read_text(encoding="utf-8"))

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def stored_masks():
    with np.load(DATA / "default_model_test_masks.npz") as packed:
        return {
            case: np.unpackbits(packed[case], count=int(np.prod(packed[f"{case}_shape"])))
            .reshape(tuple(packed[f"{case}_shape"]))
            .astype(bool)
            for case in HASHES
        }


@pytest.fixture(scope="module")
def predictor():
    return Predictor(load_model("default"), device="cpu")


def test_the_stored_masks_are_the_model_cards_test_patients():
    split = Path(__file__).parents[1] / "training/default_model/results/split.json"
    assert sorted(HASHES) == sorted(json.loads(split.read_text(encoding="utf-8"))["test"])


@pytest.mark.parametrize("case", sorted(HASHES))
def test_the_default_model_gives_the_stored_mask(case, real_data_dir, stored_masks, predictor):
    image, meta = read_volume(real_data_dir / "images" / f"{case}.nii.gz")
    mask = predictor.predict(image, meta)
    digest = hashlib.sha256(np.ascontiguousarray(mask, dtype=np.uint8).tobytes()).hexdigest()
    if digest != HASHES[case]:
        # Bit-exact is the expectation; a library's float arithmetic may move a few boundary
        # voxels, which must stay below 5e-4 of Dice.
        assert dice(mask > 0, stored_masks[case]) >= 0.9995
