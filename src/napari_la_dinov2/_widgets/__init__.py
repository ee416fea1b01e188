"""napari dock widgets: Segment, Fine-tune, Few-shot, Compare (thin adapters over the engine)."""
