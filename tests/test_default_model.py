"""The embedded default model as shipped: small, honest about its data, and accurate on a real
case it never saw (the README's main job)."""

from __future__ import annotations

from napari_la_dinov2 import read_labels, read_volume
from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.metrics import dice
from napari_la_dinov2.models import default_checkpoint_dir, load_model

MAX_SHIPPED_BYTES = 10 * 1000 * 1000  # the limit for weights inside the package


def test_the_shipped_weights_fit_the_package_budget_and_name_their_data():
    directory = default_checkpoint_dir()
    assert (directory / "model.safetensors").stat().st_size <= MAX_SHIPPED_BYTES
    assert (directory / "MODEL_CARD.md").is_file()
    model = load_model("default")
    provenance = model.provenance
    assert len(provenance["trained_on"]) >= 60 and len(provenance["validated_on"]) >= 8
    assert not set(provenance["trained_on"]) & set(provenance["validated_on"])
    assert model.unseen(["never-seen", provenance["trained_on"][0]]) == ["never-seen"]


def test_the_default_model_segments_an_unseen_real_case(real_data_dir, real_case_ids):
    model = load_model("default")
    case = model.unseen(real_case_ids)[0]  # in neither its training nor its validation split
    image, meta = read_volume(real_data_dir / "images" / f"{case}.nii.gz")
    truth = read_labels(real_data_dir / "labels" / f"{case}.nii.gz", meta) > 0
    mask = Predictor(model, device="cpu").predict(image, meta)  # as `la-dinov2 segment` does
    # The model card reports 0.91 on average over such cases; 0.85 leaves room for a hard one.
    assert dice(mask > 0, truth) > 0.85
