"""The gallery a recognition model identifies walkers with: same model, and a threshold, or nothing.

:func:`open_gallery` is the one way the runtime, the ROS camera node and the ``enroll`` / ``identify`` commands
open a gallery for a model. It refuses (with errors naming the file and what to do):

* a gallery enrolled with another model (its fingerprint differs: embeddings are not comparable);
* identification without a threshold: the threshold is the caller's explicit one, else the one the gallery
  file was enrolled with, else the model's calibrated one (fitted on its validation identities, in its
  checkpoint sidecar); a model without one is refused rather than run with everybody unknown or, worse,
  everybody accepted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from metagait_edge.recognition.gallery import Gallery

log = logging.getLogger(__name__)


def model_fingerprint_of(model) -> str:
    """The fingerprint the checkpoint loader attached, else computed from the weights."""
    from metagait_edge.recognition.checkpoint import model_fingerprint

    return getattr(model, "fingerprint", None) or model_fingerprint(model)


def open_gallery(model, path: Optional[str | os.PathLike] = None, threshold: Optional[float] = None,
                 create: bool = False) -> Gallery:
    """The gallery at ``path`` (an empty one when None, or when ``create`` and the file does not exist yet)
    bound to ``model``, with the threshold identification will use (see the module docstring)."""
    from metagait_edge.recognition.checkpoint import require_open_set

    fingerprint = model_fingerprint_of(model)
    if path is not None and Path(path).is_file():
        gallery = Gallery.load(path, model_fingerprint=fingerprint)
    elif path is not None and not create:
        raise FileNotFoundError(f"gallery file not found: {path} (enroll walkers with `metagait-edge enroll`)")
    else:
        gallery = Gallery()
    calibrated = getattr(model, "open_set", None)
    if threshold is not None:
        gallery.threshold = float(threshold)
        gallery.threshold_source = "set explicitly (models.identity_threshold / --threshold)"
    elif gallery.threshold is None:
        require_open_set(model)  # no threshold anywhere: refused, naming the command that fits one
    elif calibrated is not None and abs(calibrated.threshold - gallery.threshold) > 1e-12:
        log.info("gallery %s keeps the threshold it was enrolled with (%.6g); the model's calibrated one is now %.6g",
                 path, gallery.threshold, calibrated.threshold)
    gallery.use_model(fingerprint, calibrated, where=f"gallery file {path}" if path else "gallery")
    return gallery
