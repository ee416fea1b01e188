"""Atomically written outputs get ordinary permissions (tempfile would leave them 0600/0700)."""

import os
import stat

import numpy as np

from napari_la_dinov2.models import save_checkpoint
from napari_la_dinov2.volume_files import VolumeMeta, write_labels


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_mask_and_checkpoint_follow_the_umask(tmp_path, tiny_unet):
    old = os.umask(0o022)
    try:
        labels = np.zeros((16, 16, 4), dtype=np.uint8)
        mask = write_labels(tmp_path / "mask.nii.gz", labels, VolumeMeta.from_spacing(labels.shape))
        checkpoint = save_checkpoint(tiny_unet, tmp_path / "ckpt")
    finally:
        os.umask(old)
    assert _mode(mask) == 0o644
    assert _mode(checkpoint) == 0o755
    assert _mode(checkpoint / "model.safetensors") == 0o644
