"""The embedded default model as shipped: small, honest about its data, and accurate on a real
case it never saw (the README's main job)."""

from __future__ import annotations

from napari_la_dinov2 import read_labels, read_volume
from napari_la_dinov2.inference import Predictor
from napari_la_dinov2.models import default_checkpoint_dir, load_model
from napari_la_dinov2.scoring.metrics import dice

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


def test_the_default_model_fine_tunes_on_a_corrected_real_case(
    real_data_dir, real_case_ids, tmp_path
):
    # The correction round users run from the Fine-tune widget: the embedded model (whatever
    # its views) trained on one real case whose mask was corrected (here: the expert's).
    from napari_la_dinov2.training import TrainConfig, finetune, load_case_folder

    default = load_model("default")
    case = load_case_folder(real_data_dir, names=default.unseen(real_case_ids)[:1])
    config = TrainConfig(
        model="default",
        epochs=1,
        steps_per_epoch=2,
        batch_size=4,
        lr=1e-5,
        device="cpu",
        output_dir=str(tmp_path / "round"),
    )
    result = finetune(case, config)
    tuned = load_model(result.best_checkpoint)
    assert tuned.preprocessing == default.preprocessing  # views, 2.5D context, size kept
    assert tuned.provenance["this_run"]["trained_on"] == [case[0].name]
    assert tuned.provenance["trained_on"] == [*default.provenance["trained_on"], case[0].name]
    assert tuned.unseen(real_case_ids) == [
        n for n in default.unseen(real_case_ids) if n != case[0].name
    ]
    # A small step from a good model stays good on the case it was tuned on.
    assert result.best_val_dice > 0.85
