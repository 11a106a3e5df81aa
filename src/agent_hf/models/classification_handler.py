"""Inference Endpoints handler of an Agent Attention ImageNet classifier (written by agent_hf's save_model_folder as
`handler.py` of a classification folder; the segmentation folders get their own).

Hugging Face Inference Endpoints run this file (a "custom handler") when it sits at the root of the model repository;
`requirements.txt` next to it lists what it needs. It serves the `image-classification` task with transformers' own
pipeline and the folder's image processor (`image_processing_agent_classification.py`, the official evaluation
transform), loaded with trust_remote_code since the model code ships with the folder.

Request: the image as the raw body (`Content-Type: image/png`, `image/jpeg`, ...), or JSON
`{"inputs": "<base64 image or URL>", "parameters": {"top_k": 5}}` (parameters are optional: `top_k`).
Response: `[{"label": str, "score": float}, ...]`, the top_k classes by probability (a list per image for a list of
inputs).
"""

from __future__ import annotations

from typing import Any

from transformers import pipeline


class EndpointHandler:
    """`EndpointHandler(path)(request)`: the Inference Endpoints custom-handler interface."""

    def __init__(self, path: str = "") -> None:
        self.pipeline = pipeline("image-classification", model=path or ".", trust_remote_code=True)
        # The folder's own input decoding (bytes, base64, data URL, path, URL, PIL image, array), shipped with its
        # image processor.
        self._open_image = self.pipeline.image_processor.open_image

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Classifies `data["inputs"]`: a PIL image, encoded image bytes, a base64 string or an image URL (or a list
        of them, answered with one list per image).

        Raises:
            ValueError: no `inputs`, parameters that are not a mapping or name something other than `top_k`, or
                inputs that do not decode to an image.
        """
        if not isinstance(data, dict) or data.get("inputs") is None:
            raise ValueError('the request must be {"inputs": <image>, "parameters": {...}} with an image in "inputs"')
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f'"parameters" must be a JSON object, got {type(parameters).__name__}')
        unknown = sorted(set(parameters) - {"top_k"})
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; the classifier takes top_k")
        inputs = data["inputs"]
        if isinstance(inputs, (list, tuple)):
            return self.pipeline([self._open_image(image) for image in inputs], **parameters)
        return self.pipeline(self._open_image(inputs), **parameters)
