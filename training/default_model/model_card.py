"""The default model's card (MODEL_CARD.md): what it is, its data and split, its scores, how it
was trained, on which grid, and its limits; written by ``evaluate_default.py`` from the runs and
the scores it measured."""

from __future__ import annotations

import json
import platform
import textwrap
from pathlib import Path

import torch
from train_default import cpu_name  # this folder is on sys.path when run as a script

from napari_la_dinov2.scoring.metrics import markdown_table, summarize

REPO = Path(__file__).resolve().parents[2]


PLANES = {"through-plane": "axial", "in-plane-1": "sagittal", "in-plane-2": "coronal"}
# What each view is for the axial LA 2018 scans.
VIEW_NAMES = {view: f"{view} ({plane} slices)" for view, plane in PLANES.items()}


def machine(run: Path) -> str:
    """Where a run trained, as train_default.py recorded it (runs before it did: not named)."""
    recipe = run / "recipe_args.json"
    recipe_args = json.loads(recipe.read_text()) if recipe.is_file() else {}
    cpu = recipe_args.get("cpu", "a CPU the run did not record")
    return f"{cpu} with {recipe_args.get('threads', 1)} torch thread(s)"


def copies_text(model, views) -> str:
    """Which members were trained on a view_copy.py copy (before the engine had views)."""
    members = model.provenance.get("members", [])
    named = [VIEW_NAMES[v] for v, m in zip(views, members) if m.get("view_trained_on")]
    if not named:
        return ""
    return (
        f"\nThe {' and '.join(named)} member(s) were trained through-plane on a copy of the data "
        "whose affine made that axis the slice axis (`experiments/view_copy.py`): the same "
        "slices as `--view` cuts (a test checks that the Predictor gives the same probabilities)."
    )


def context_text(model) -> str:
    context = model.preprocessing.context
    if not context:
        return ""
    return f"; 2.5D: each slice is fed with its {context} neighbour(s) on either side as channels"


def split_seed(config: dict) -> int:
    return config["seed"] if config.get("split_seed") is None else config["split_seed"]


def member_count(model) -> int:
    return model.net.rebuild_kwargs().get("members", 1)


def display_name(model) -> str:
    size, context = model.preprocessing.input_size, model.preprocessing.context
    n, views = member_count(model), model.preprocessing.views
    kind = f"{len(views)}-view UNet" if len(views) > 1 else f"{n} UNets" if n > 1 else "UNet"
    return f"LA default ({kind} {'2.5D ' if context else ''}{size})"


def fit_text(model) -> str:
    """How the slices become square, per plane where the members differ."""
    said = {"pad": "padded to a square", "stretch": "stretched to the square"}
    planes: dict[str, list[str]] = {}  # fit -> the planes fitted that way, in member order
    for branch in model.preprocessing.branches:
        planes.setdefault(branch.fit, []).append(PLANES[branch.view])
    if len(planes) == 1:
        return f"slices {said[next(iter(planes))]}"
    return ", ".join(f"{' and '.join(p)} slices {said[fit]}" for fit, p in planes.items())


def stretched_in_plane(model) -> bool:
    """Whether an in-plane member stretches its slices (its through-plane axis fills the input)."""
    return any(
        b.view != "through-plane" and b.fit == "stretch" for b in model.preprocessing.branches
    )


def resampling_text(model, views) -> str:
    """What the slices' geometry assumes: one item of the card's limits, wrapped."""
    if stretched_in_plane(model):
        text = (
            "Slices are not resampled to a common voxel size. The sagittal and coronal members "
            "stretch theirs, so the through-plane extent of the region fills their input whatever "
            "its number of slices. The training crops hold 88 slices of 1.25 mm (about 110 mm); "
            "a region cut down to the atrium plus 4 slices on either side (68 slices on average) "
            "still scored 0.919 against 0.922 on the test patients "
            "(`training/default_model/experiments/roi_extent.py`), but much shorter or longer "
            "regions along z are outside what was tested."
        )
    elif len(views) > 1:
        text = (
            "Slices are fed at their voxel size, not resampled: the sagittal and coronal members "
            "see the through-plane axis at its own spacing, so scans with much thicker slices "
            "than 1.25 mm are outside what they were trained on."
        )
    else:
        text = "Slices are fed at their voxel size, not resampled."
    text += (
        " Other voxel sizes (0.5-1.25 mm in-plane, 1.0-2.5 mm slices) and raw int16 intensities:"
        " see the training grid section above; sizes outside those have not been tested."
    )
    return textwrap.fill(text, width=98, subsequent_indent="  ")


GRID_SECTION = """## Training grid and other voxel sizes

Trained at **{spacing} mm** voxels with a field of view of **{extent} mm** (medians over its
{cases} training cases, in the order in-plane 1, in-plane 2, through-plane; `provenance.training_grid`
of config.json, shown by `la-dinov2 models`). On the test patients resampled to other grids
(`python benchmarks/resolution.py`, images cubic, the expert masks linear then > 0.5, Dice against
the resampled expert mask; [results](../../../../benchmarks/results/resolution-cpu.txt)):

{table}

Every grid, and raw-looking int16 intensities, stays within 0.01 Dice of the native grid, so
volumes are segmented on their own grid, not resampled to the training grid (resampling would cost
time and move the mask off the image's voxels for no measured gain). The s/volume column was
measured with 1 thread on a 2-core CPU that other jobs shared (see the results file): compare its
rows with each other, not with the inference time above.
"""


def grid_section(model) -> str:
    """The card's training grid and the measured table of benchmarks/resolution.py, if run."""
    grid = model.provenance.get("training_grid")
    if not grid:
        return ""
    results = REPO / "benchmarks" / "results" / "resolution-cpu.txt"
    table = (
        [line for line in results.read_text().splitlines() if line.startswith("|")]
        if results.is_file()
        else []
    )
    spacing = " x ".join(f"{v:g}" for v in grid["spacing_mm"])
    extent = " x ".join(f"{v:g}" for v in grid["field_of_view_mm"])
    return GRID_SECTION.format(
        spacing=spacing,
        extent=extent,
        cases=grid["cases"],
        table="\n".join(table) or "(not measured)",
    )


def what_text(model, config: dict, seeds: list, member_dice: list, val: dict) -> str:
    """The card's first sentence's subject: one UNet, an ensemble of seeds, or of views."""
    n_params = sum(p.numel() for p in model.parameters())
    n = member_count(model)
    views = model.preprocessing.views
    unets = (
        f"compact 2D UNets (MONAI `UNet`, channels {config['model_kwargs']['channels']}, 2 "
        f"residual units per level, {n_params / n / 1e6:.2f} M parameters each)"
    )
    alone = (
        f"On the validation cases the members alone score "
        f"{', '.join(f'{d:.4f}' for d in member_dice)} (Dice; the ensemble: "
        f"{val['dice']['mean']:.4f}). The model"
    )
    if len(views) > 1:
        fits = len({b.fit for b in model.preprocessing.branches}) > 1
        return (
            f"A multi-view ensemble of {n} {unets}, one per view: "
            f"{', '.join(VIEW_NAMES[v] for v in views)}. Each member cuts the volume along its "
            f"own axis and their logits are averaged on the volume's grid; trained by the same "
            f"recipe (`--view`{', `--fit`' if fits else ''}) on the same "
            f"patients. {alone}"
        )
    if n > 1:
        return (
            f"An ensemble of {n} {unets}, trained by the same recipe with seeds "
            f"{', '.join(map(str, seeds))} on the same patients; their logits are averaged. "
            f"{alone}"
        )
    return f"A {unets.replace('UNets', 'UNet').replace(' each', '')}"


def summary_text(model, what: str, use_tta: bool) -> str:
    """The card's opening paragraph: what the model is and does, wrapped."""
    n_params = sum(p.numel() for p in model.parameters())
    views = model.preprocessing.views
    along = "(each member along its own axis)" if len(views) > 1 else "along the through-plane axis"
    size = model.preprocessing.input_size
    return textwrap.fill(
        f"{what} segments the left-atrium blood pool of a 3D LGE-MRI volume slice by slice "
        f"{along}, at {size}x{size} ({fit_text(model)}, robust z-score intensities"
        f"{context_text(model)}), with {'left-right flip averaging, ' if use_tta else ''}"
        "thresholding at 0.5, in-plane opening + closing and the largest 3D connected component. "
        f"The weights are stored as float16 ({n_params * 2 / 1e6:.1f} MB); it computes in "
        "float32, and the figures below are those of the stored weights.",
        width=100,
    )


def score_row(cases: str, s: dict) -> str:
    """One row of the card's results table: mean ± SD of each measure."""
    cells = [f"{s[k]['mean']:.4f} ± {s[k]['sd']:.4f}" for k in ("dice", "iou")]
    cells += [f"{s[k]['mean']:.2f} ± {s[k]['sd']:.2f}" for k in ("hd95_mm", "assd_mm")]
    return f"| {cases} | {' | '.join(cells)} |"


def limits_section(model, views) -> str:
    """The card's intended use and limits: crops like the training data, its geometry, one
    centre's data."""
    return f"""## Intended use and limits

- It expects **atrium-centred crops like the training data** (a median 119 x 89 mm in-plane, 110
  mm through-plane). On a full field-of-view scan (e.g. 576x576 or 640x640 voxels) click the
  atrium: `la-dinov2 segment scan.nii.gz --center i,j,k ...` (array indices), or a Points layer
  as "Centre (Points)" in the napari Segment widget, segments a region of that field of view (mm,
  converted with the scan's voxel size) around the click; or give a box, `--roi
  r0:r1,c0:c1[,z0:z1]` or a Shapes rectangle. Outside the region the mask is 0. Finding the
  atrium without a click would need full field-of-view training data, which we do not have.
- {resampling_text(model, views)}
- Trained on one centre's data (the 2018 challenge release): other
  sequences, contrast timings and pathologies have not been tested. Check every mask; correct
  it with napari's brush and fine-tune on your corrections.
- A research tool, not a medical device.
"""


def model_card(model, runs, split, results, seconds, train_seconds, use_tta, member_dice) -> str:
    config = json.loads((runs[0] / "config.json").read_text())
    seeds = [json.loads((run / "config.json").read_text())["seed"] for run in runs]
    n = member_count(model)
    trained_where = [
        f"{t / 60:.0f} minutes on {machine(run)}"
        for run, t in zip(runs, train_seconds, strict=True)
    ]
    test_key = "test + flip TTA" if use_tta else "test"
    val_key = "val + flip TTA" if use_tta else "val"
    test, val = summarize(results[test_key]), summarize(results[val_key])
    views = model.preprocessing.views
    summary = summary_text(model, what_text(model, config, seeds, member_dice, val), use_tta)
    return f"""# napari-la-dinov2 default model (embedded)

{summary}

## Data and split

The 80 training cases of the 2018 Atrial Segmentation Challenge (LA 2018; the 80-case list used
by UA-MT/SASSNet/DTC): 3D LGE-MRI at 0.625 x 0.625 x 1.25 mm, cropped around the atrium with a
10-20 voxel margin. Split by patient with seed {split_seed(config)}: {len(split["train"])} training,
{len(split["val"])} validation (early stopping / checkpoint choice) and {len(split["test"])} test
cases (never seen in training or selection). The case ids are in `provenance` of config.json.

## Results (3D, per volume, mean ± SD)

| cases | Dice | IoU | HD95 (mm) | ASSD (mm) |
|---|---|---|---|---|
{score_row(f"validation ({len(split['val'])})", val)}
{score_row(f"test ({len(split['test'])})", test)}

All variants scored (with and without flip averaging):

{markdown_table(results)}

Inference: {seconds[test_key]:.2f} s per volume on {cpu_name()} ({torch.get_num_threads()} threads, fp32), the machine
that ran this evaluation.

## Training

Adam, lr {config["lr"]} with a cosine decay, BCE + soft Dice, batch {config["batch_size"]},
{config["epochs"]} epochs of {config["steps_per_epoch"]} steps, {config["foreground_fraction"]:.0%} of each batch from
slices holding atrium, flips / rotations (±15°) / scalings (0.85-1.15) / contrast, brightness
and noise; the epoch with the best validation Dice kept. Training took {"; ".join(trained_where)}{" (one run per member, in this order)" if n > 1 else ""}
(torch {torch.__version__}, {platform.system()}; 2-core machines that other jobs may share).{copies_text(model, views)} Re-run: see `training/default_model/README.md` in the repository.

{grid_section(model)}
{limits_section(model, views)}"""
