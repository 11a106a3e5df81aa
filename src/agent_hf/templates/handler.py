"""Inference Endpoints handler of an Agent Attention segmentation model (written by agent_hf's save_model_folder).

Hugging Face Inference Endpoints run this file (a "custom handler") when it sits at the root of the model repository;
`requirements.txt` next to it lists what it needs. It serves the `image-segmentation` task with the model's own
pipeline (`pipeline_agent.py`, mmsegmentation's test-time inference), which the hosted widget cannot run since it does
not execute custom code.

Request: the image as the raw body (`Content-Type: image/png`, `image/jpeg`, ...), or JSON
`{"inputs": "<base64 image or URL>", "parameters": {"mode": "slide", "ratios": [0.75, 1.0, 1.25], "flip": true}}`
(parameters are optional: `mode`, `ratios`, `flip`, `crop_size`, `stride`).
Response: one `{"label": str, "score": null, "mask": "<base64 PNG>"}` per class present, the mask white (255) where
the class is predicted, black elsewhere, at the image's size.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from transformers import pipeline


def _png_base64(mask) -> str:
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class EndpointHandler:
    """`EndpointHandler(path)(request)`: the Inference Endpoints custom-handler interface."""

    def __init__(self, path: str = "") -> None:
        self.pipeline = pipeline("image-segmentation", model=path or ".", trust_remote_code=True)

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Segments `data["inputs"]`: a PIL image, encoded image bytes, a base64 string or an image URL (or a list of
        them, answered with one list per image).

        Raises:
            ValueError: no `inputs`, parameters that are not a mapping, an unknown parameter or value, or inputs that
                do not decode to an image.
        """
        if not isinstance(data, dict) or data.get("inputs") is None:
            raise ValueError('the request must be {"inputs": <image>, "parameters": {...}} with an image in "inputs"')
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f'"parameters" must be a JSON object, got {type(parameters).__name__}')
        inputs = data["inputs"]
        if isinstance(inputs, (list, tuple)):
            return [self._answer(segments) for segments in self.pipeline(list(inputs), **parameters)]
        return self._answer(self.pipeline(inputs, **parameters))

    @staticmethod
    def _answer(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"label": segment["label"], "score": segment["score"], "mask": _png_base64(segment["mask"])}
            for segment in segments
        ]
