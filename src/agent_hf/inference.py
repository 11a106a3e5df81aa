"""mmsegmentation's test-time inference (``EncoderDecoder.inference`` / ``aug_test``) for agent_hf models.

* :func:`predict_whole` (``test_cfg=dict(mode='whole')``, the paper's setting), :func:`predict_slide`
  (``mode='slide'``) and :func:`predict_multiscale` (``MultiScaleFlipAug`` + ``aug_test``) return logits or
  probabilities at the size of the original image; :func:`segment` returns the class map.
* :func:`multiscale_inputs` builds their inputs from an image (mmseg's keep-ratio test resize + normalization).

The code lives in :mod:`agent_hf.segmentation_inference`, which is shipped with every model folder: the image
processor, the ``image-segmentation`` pipeline and the Inference Endpoints handler run these very functions.
"""

from .segmentation_inference import (
    DEFAULT_EVAL_SCALE,
    InferenceMode,
    multiscale_inputs,
    predict_multiscale,
    predict_slide,
    predict_whole,
    scaled_bound,
    segment,
)

__all__ = [
    "DEFAULT_EVAL_SCALE",
    "InferenceMode",
    "multiscale_inputs",
    "predict_multiscale",
    "predict_slide",
    "predict_whole",
    "scaled_bound",
    "segment",
]
