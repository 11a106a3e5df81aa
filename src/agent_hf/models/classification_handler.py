"""Inference Endpoints handler of an Agent Attention ImageNet classifier (written by agent_hf's save_model_folder as
`handler.py` of a classification folder; the segmentation folders get their own).

Hugging Face Inference Endpoints run this file (a "custom handler") when it sits at the root of the model repository;
`requirements.txt` next to it lists what it needs. It serves the `image-classification` task with transformers' own
pipeline and the folder's image processor (`image_processing_agent_classification.py`, the official evaluation
transform), loaded with trust_remote_code since the model code ships with the folder.

Request: the image as the raw body (`Content-Type: image/png`, `image/jpeg`, ...), or JSON
`{"inputs": "<base64 image>", "parameters": {"top_k": 5}}` (parameters are optional: `top_k`).
Response: `[{"label": str, "score": float}, ...]`, the top_k classes by probability (a list per image for a list of
inputs).

Safe against what a stranger can send: file paths and URLs in `inputs` are refused (no server file is read or named,
no URL fetched) unless the endpoint's owner sets `AGENT_HF_ALLOW_PATHS=1` / `AGENT_HF_ALLOW_URLS=1`; the pixels (read
from the image header before decoding), bytes and images of a request are bounded, each limit raised with an
environment variable (`AGENT_HF_MAX_PIXELS`, `AGENT_HF_MAX_BYTES`, `AGENT_HF_MAX_IMAGES`).
"""

from __future__ import annotations

from typing import Any

from transformers import pipeline


class EndpointHandler:
    """`EndpointHandler(path)(request)`: the Inference Endpoints custom-handler interface."""

    def __init__(self, path: str = "", allow_paths: bool | None = None, allow_urls: bool | None = None) -> None:
        """`allow_paths` / `allow_urls` (default: the environment variables `AGENT_HF_ALLOW_PATHS` /
        `AGENT_HF_ALLOW_URLS`, off when unset) let requests name server files / URLs."""
        self.pipeline = pipeline("image-classification", model=path or ".", trust_remote_code=True)
        self.allow_paths, self.allow_urls = allow_paths, allow_urls
        # The folder's own input decoding and its guards, shipped with its image processor.
        self._open_images = self.pipeline.image_processor.open_served_images

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Classifies `data["inputs"]`: a PIL image, encoded image bytes or a base64 string (paths and URLs only if the
        owner allowed them), or a non-empty list of them, answered with one list per image.

        Raises:
            ValueError: no `inputs`, parameters that are not a mapping or name something other than `top_k`, inputs
                that do not decode to an image, or a request beyond the limits.
        """
        if not isinstance(data, dict) or data.get("inputs") is None:
            raise ValueError('the request must be {"inputs": <image>, "parameters": {...}} with an image in "inputs"')
        parameters = data.get("parameters")
        parameters = {} if parameters is None else parameters
        if not isinstance(parameters, dict):
            raise ValueError(f'"parameters" must be a JSON object, got {type(parameters).__name__}')
        unknown = sorted(set(parameters) - {"top_k"})
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; the classifier takes top_k")
        inputs = data["inputs"]
        images = self._open_images(inputs, allow_paths=self.allow_paths, allow_urls=self.allow_urls)
        if isinstance(inputs, (list, tuple)):
            return self.pipeline(images, **parameters)
        return self.pipeline(images[0], **parameters)
