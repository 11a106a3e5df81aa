"""Inference Endpoints handler of an Agent Attention segmentation model (written by agent_hf's save_model_folder).

Hugging Face Inference Endpoints run this file (a "custom handler") when it sits at the root of the model repository;
`requirements.txt` next to it lists what it needs. It serves the `image-segmentation` task with the model's own
pipeline (`pipeline_agent.py`, mmsegmentation's test-time inference), which the hosted widget cannot run since it does
not execute custom code.

Request: the image as the raw body (`Content-Type: image/png`, `image/jpeg`, ...), or JSON
`{"inputs": "<base64 image>", "parameters": {"mode": "slide", "ratios": [0.75, 1.0, 1.25], "flip": true}}`
(parameters are optional: `mode`, `ratios`, `flip`, `crop_size`, `stride`).
Response: one `{"label": str, "score": null, "mask": "<base64 PNG>"}` per class present, the mask white (255) where
the class is predicted, black elsewhere, at the image's size.

Safe against what a stranger can send: file paths and URLs in `inputs` are refused (no server file is read or named,
no URL fetched) unless the endpoint's owner sets `AGENT_HF_ALLOW_PATHS=1` / `AGENT_HF_ALLOW_URLS=1`; every request
is bounded (pixels read from the image header before decoding, bytes, images per request, number and range of
`ratios`, forward passes per image), each limit raised with an environment variable such as
`AGENT_HF_MAX_PIXELS=100000000` (see `ServingLimits` in `image_ops.py`).
"""

from __future__ import annotations

import base64
import io
import os
from typing import Any

from transformers import pipeline

#: The parameters a request may set; anything else (the pipeline's `timeout`, the owner's limits) is refused.
REQUEST_PARAMETERS = ("mode", "ratios", "flip", "crop_size", "stride")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _png_base64(mask) -> str:
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class EndpointHandler:
    """`EndpointHandler(path)(request)`: the Inference Endpoints custom-handler interface."""

    def __init__(self, path: str = "", allow_paths: bool | None = None, allow_urls: bool | None = None) -> None:
        """`allow_paths` / `allow_urls` (default: the environment variables `AGENT_HF_ALLOW_PATHS` /
        `AGENT_HF_ALLOW_URLS`, off when unset) let requests name server files / URLs."""
        self.pipeline = pipeline(
            "image-segmentation",
            model=path or ".",
            trust_remote_code=True,
            allow_paths=_flag("AGENT_HF_ALLOW_PATHS") if allow_paths is None else allow_paths,
            allow_urls=_flag("AGENT_HF_ALLOW_URLS") if allow_urls is None else allow_urls,
        )

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Segments `data["inputs"]`: a PIL image, encoded image bytes or a base64 string (paths and URLs only if the
        owner allowed them), or a non-empty list of them, answered with one list per image.

        Raises:
            ValueError: no `inputs`, parameters that are not a mapping, an unknown parameter or value, inputs that
                do not decode to an image, or a request beyond the limits.
        """
        if not isinstance(data, dict) or data.get("inputs") is None:
            raise ValueError('the request must be {"inputs": <image>, "parameters": {...}} with an image in "inputs"')
        parameters = data.get("parameters")
        parameters = {} if parameters is None else parameters
        if not isinstance(parameters, dict):
            raise ValueError(f'"parameters" must be a JSON object, got {type(parameters).__name__}')
        unknown = sorted(set(parameters) - set(REQUEST_PARAMETERS))
        if unknown:
            raise ValueError(
                f"unknown argument(s) {unknown} in parameters; a request may set {', '.join(REQUEST_PARAMETERS)}"
            )
        inputs = data["inputs"]
        # agent_hf's pipeline opens the inputs itself, with its guards and limits (`image_ops.ServingLimits`).
        if not hasattr(self.pipeline, "allow_paths"):
            is_list = isinstance(inputs, (list, tuple))
            inputs = [self._image(item) for item in inputs] if is_list else self._image(inputs)
        if isinstance(inputs, (list, tuple)):
            return [self._answer(segments) for segments in self.pipeline(list(inputs), **parameters)]
        return self._answer(self.pipeline(inputs, **parameters))

    def _image(self, item: Any) -> Any:
        """For a folder without agent_hf's pipeline (a model that is not an agent_hf model, so no `image_ops.py` to
        import): an input for transformers' own pipeline, a string as the image its base64 encodes, since that
        pipeline would open a path or fetch an URL (unless the owner allowed them)."""
        if isinstance(item, (bool, int, float, dict, list, tuple)):  # JSON that cannot hold an image
            raise ValueError(f"an input must be an image (encoded bytes or base64), got {type(item).__name__}")
        if not isinstance(item, str) or _flag("AGENT_HF_ALLOW_PATHS") or _flag("AGENT_HF_ALLOW_URLS"):
            return item
        from PIL import Image

        try:
            return Image.open(io.BytesIO(base64.b64decode("".join(item.split()), validate=True)))
        except (ValueError, OSError):
            raise ValueError(
                f"{item[:60]!r} is not a base64-encoded image (file paths and URLs are not accepted here)"
            ) from None

    @staticmethod
    def _answer(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"label": segment["label"], "score": segment["score"], "mask": _png_base64(segment["mask"])}
            for segment in segments
        ]
