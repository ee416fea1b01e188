"""The engine's settings from ``la-dinov2 segment``'s options, and the engine loaded from them:
what one scan (segment.py) and a folder of scans (segment_folder.py) share."""

from __future__ import annotations

import argparse
import sys


def inference_settings(args: argparse.Namespace, *, doubt: bool = False):
    """The engine's settings from the model, region and output options."""
    from ..segmentation import InferenceSettings

    return InferenceSettings(
        model=args.model if args.checkpoint is None else args.checkpoint,
        backbone_source=getattr(args, "backbone_source", None),
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        threshold=args.threshold,
        morphology=not args.no_morphology,
        largest_cc=not args.no_largest_cc,
        slice_axis=getattr(args, "slice_axis", None),
        doubt=doubt,
        ras=getattr(args, "ras", False),
    )


def load_engine(settings):
    """The engine of ``settings``, saying on stderr when its model is untrained."""
    from ..segmentation import SegmentationEngine

    engine = SegmentationEngine(settings)
    if engine.model.untrained_warning():
        print(f"warning: {engine.model.untrained_warning()}", file=sys.stderr)
    return engine
