"""The image operations of mmsegmentation's test pipeline, in numpy and PIL (shipped with every model folder).

Training (``agent_hf.data.transforms``), evaluation (``agent_hf.models.segmentation_inference``), the image
processor, the pipeline, the Inference Endpoints handler and the demo app all turn an image into model input with
these functions, so a photo is seen the same way everywhere: :func:`prepare_image` = :func:`to_rgb_array` (the
image as ``(H, W, 3)`` ``uint8`` RGB) -> :func:`resize_keep_ratio` (mmcv ``imrescale`` with OpenCV's bilinear
sampling) -> :func:`normalize` (mmcv ``imnormalize``).

Conventions: images are ``(H, W, 3)`` ``uint8`` RGB arrays; ``scale=(long_edge, short_edge)`` for keep-ratio
resizing, ``size=(height, width)`` for padding and ``(width, height)`` for the explicit output size of
:func:`resize_bilinear` / :func:`resize_nearest` (like ``cv2.resize``).

Fidelity to OpenCV (why PIL is not used for resizing): ``cv2.resize`` with ``INTER_LINEAR`` samples the two nearest
source pixels at the half-pixel-center position ``(x + 0.5) * src / dst - 0.5`` and does **not** antialias when
shrinking, in 11-bit fixed-point arithmetic; PIL's ``BILINEAR`` widens its filter when shrinking and rounds
differently when enlarging. ``INTER_NEAREST`` picks source index ``floor(x * src / dst)``, PIL's ``NEAREST``
``floor((x + 0.5) * src / dst)``. :func:`resize_bilinear` and :func:`resize_nearest` reproduce OpenCV's arithmetic
and are bit-exact with opencv-python 4.10 and 5.0 in our checks (random sizes and channel counts).

This module imports only numpy, PIL and the standard library: transformers copies it next to the model code.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import io
import math
import os
import socket
import threading
import time
import urllib.parse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "ADE20K_MEAN",
    "ADE20K_STD",
    "ImageInput",
    "ImageSource",
    "ImageTooLargeError",
    "ServingLimits",
    "check_pixels",
    "env_flag",
    "env_number",
    "fetch_url",
    "normalize",
    "open_image",
    "open_served_image",
    "open_served_images",
    "pad_to",
    "prepare_image",
    "rescale_size",
    "resize_bilinear",
    "resize_keep_ratio",
    "resize_nearest",
    "to_rgb_array",
]

#: ImageNet RGB mean/std in 0..255 units, as in the ADE20K config's ``img_norm_cfg``.
ADE20K_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
ADE20K_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

ImageInput = np.ndarray | Image.Image
#: Anything :func:`open_image` reads: an image, encoded bytes, a base64 string (or data URL), a path or an URL.
ImageSource = ImageInput | bytes | bytearray | memoryview | str | os.PathLike
Interpolation = Literal["bilinear", "nearest"]

_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def _where(name: str | None) -> str:
    return f"sample {name!r}: " if name is not None else ""


def _sixteen_to_eight(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0, 65535).astype(np.uint16) >> 8).astype(np.uint8)


# --------------------------------------------------------------------------- inputs
def to_rgb_array(image: ImageInput, name: str | None = None) -> np.ndarray:
    """Convert an image to an ``(H, W, 3)`` ``uint8`` RGB array.

    Accepts a PIL image of any mode or a numpy array ``(H, W)``, ``(H, W, 1)``,
    ``(H, W, 3)`` or ``(H, W, 4)``. Grayscale is replicated to three channels and an
    alpha channel is dropped (not composited), as OpenCV's ``IMREAD_COLOR`` does.
    16-bit data (PIL modes ``I``/``I;16*``, numpy ``uint16``, or other integer arrays
    with values above 255) keeps its high byte.

    Raises:
        ValueError: float arrays (or PIL mode ``F``), negative values, an empty image or an unsupported shape.
    """
    if isinstance(image, Image.Image):
        if image.mode == "F":  # PIL would clip 0-1 floats to black when converting to RGB
            raise ValueError(
                f"{_where(name)}float images (PIL mode 'F') are not supported; pass uint8 (or 16-bit integer) pixels"
            )
        if image.mode in _SIXTEEN_BIT_MODES:
            array = _sixteen_to_eight(np.asarray(image))
        elif image.mode == "RGB":
            array = np.asarray(image)
        else:  # L, P, RGBA, LA, CMYK, YCbCr, 1 ...: PIL drops alpha when going to RGB
            array = np.asarray(image.convert("RGB"))
    else:
        array = np.asarray(image)
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{_where(name)}image dtype {array.dtype} is not supported; pass uint8 (or 16-bit integer) pixel "
                "values (a float image in 0-1: `(image * 255).round().astype(np.uint8)`)"
            )
        if array.dtype != np.uint8:
            if array.size and array.min() < 0:
                raise ValueError(f"{_where(name)}image has negative pixel values")
            if array.dtype == np.uint16 or (array.size and array.max() > 255):
                array = _sixteen_to_eight(array)
            else:
                array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"{_where(name)}expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{_where(name)}the image is empty (height {array.shape[0]}, width {array.shape[1]})")
    return np.ascontiguousarray(array)


# ------------------------------------------------------------------------ resizing
def rescale_size(width: int, height: int, scale: float | tuple[int, int]) -> tuple[int, int]:
    """Output ``(width, height)`` of mmcv's ``imrescale`` (keep aspect ratio).

    With ``scale=(a, b)`` the image is made as large as possible such that its long
    edge is ``<= max(a, b)`` and its short edge ``<= min(a, b)``::

        factor = min(max(a, b) / max(h, w), min(a, b) / min(h, w))

    A number ``scale`` is used as the factor directly. Each side becomes
    ``int(side * factor + 0.5)``.
    """
    if isinstance(scale, (int, float)):
        factor = float(scale)
    else:
        long_edge, short_edge = max(scale), min(scale)
        factor = min(long_edge / max(height, width), short_edge / min(height, width))
    if factor <= 0:
        raise ValueError(f"scale {scale!r} must be positive")
    new_width, new_height = int(width * factor + 0.5), int(height * factor + 0.5)
    if new_width < 1 or new_height < 1:
        raise ValueError(f"rescaling a {width}x{height} image by {scale!r} gives an empty image")
    return new_width, new_height


_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: 11-bit fixed-point weights


def _linear_taps(
    src_len: int, dst_len: int, clamp_weight: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and fixed-point weights of cv2.INTER_LINEAR along one axis.

    Returns ``(first, second, w_first, w_second)``; the weights are int32 in units
    of 1/2048 and sum to 2048 (up to rounding).
    """
    scale = 1.0 / (dst_len / src_len)  # cv2 stores the inverse of dst/src
    # cv2 evaluates the half-pixel-center position in double and stores it as float.
    pos = ((np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(pos)
    frac = pos - start
    start = start.astype(np.int64)
    if clamp_weight:
        # Horizontal pass: outside the image cv2 puts the whole weight on the edge
        # pixel. The vertical pass keeps the fractional weight and only clamps the
        # row indices, so both taps read the same edge row with split weights,
        # which rounds differently in fixed point.
        outside = (start < 0) | (start >= src_len - 1)
        frac[outside] = 0.0
    first = np.clip(start, 0, src_len - 1)
    second = np.clip(start + 1, 0, src_len - 1)
    # saturate_cast<short>(float) rounds half to even, like np.rint
    w_second = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int32)
    w_first = np.rint((np.float32(1.0) - frac) * np.float32(_COEF_SCALE)).astype(np.int32)
    return first, second, w_first, w_second


def resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize like ``cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)``.

    Half-pixel-center bilinear sampling without antialiasing, in OpenCV's 8-bit
    fixed-point arithmetic: 11-bit weights, an exact integer horizontal pass, then
    the vertical pass of its SIMD kernel,
    ``((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16) + 2 >> 2``. Bit-exact with
    opencv-python 4.10 and 5.0 in our checks (random sizes and channel counts,
    including exact 2x shrinking, where OpenCV switches to INTER_AREA, which gives
    the same numbers).

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` ``uint8`` array.
        size: output ``(width, height)``.

    Returns:
        ``(height, width[, C])`` ``uint8`` array.
    """
    if img.dtype != np.uint8:
        raise TypeError(f"resize_bilinear expects uint8 pixels, got {img.dtype}")
    out_w, out_h = size
    in_h, in_w = img.shape[:2]
    if (out_w, out_h) == (in_w, in_h):
        return img.copy()
    x0, x1, a0, a1 = _linear_taps(in_w, out_w, clamp_weight=True)
    y0, y1, b0, b1 = _linear_taps(in_h, out_h, clamp_weight=False)
    extra = (1,) * (img.ndim - 2)  # broadcast the weights over channels
    a0, a1 = a0.reshape((1, out_w, *extra)), a1.reshape((1, out_w, *extra))
    b0, b1 = b0.reshape((out_h, 1, *extra)), b1.reshape((out_h, 1, *extra))
    # Horizontal pass on every source row: values up to 255 * 2048, pre-shifted by 4
    # bits as the vertical kernel does, so that everything fits in int32.
    rows = (img[:, x0].astype(np.int32) * a0 + img[:, x1].astype(np.int32) * a1) >> 4
    out = ((rows[y0] * b0) >> 16) + ((rows[y1] * b1) >> 16)
    return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)


def resize_nearest(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize like ``cv2.resize(img, size, interpolation=cv2.INTER_NEAREST)``.

    Output pixel ``x`` copies source pixel ``min(floor(x * src / dst), src - 1)``
    (no half-pixel offset). Exact for any dtype.

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` array.
        size: output ``(width, height)``.
    """
    out_w, out_h = size
    in_h, in_w = img.shape[:2]

    def index(src_len: int, dst_len: int) -> np.ndarray:
        inv = 1.0 / (dst_len / src_len)
        return np.minimum(np.floor(np.arange(dst_len) * inv).astype(np.int64), src_len - 1)

    return img[index(in_h, out_h)[:, None], index(in_w, out_w)[None, :]]


def resize_keep_ratio(
    img: np.ndarray,
    scale: float | tuple[int, int] = (2048, 512),
    interpolation: Interpolation = "bilinear",
) -> np.ndarray:
    """mmcv ``imrescale``: resize keeping the aspect ratio (see :func:`rescale_size`).

    This is the test-time ``Resize(img_scale=(2048, 512), keep_ratio=True)``.

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` array.
        scale: ``(long_edge, short_edge)`` bound or a scale factor.
        interpolation: ``"bilinear"`` for images, ``"nearest"`` for label maps.
    """
    height, width = img.shape[:2]
    size = rescale_size(width, height, scale)
    if interpolation == "bilinear":
        return resize_bilinear(img, size)
    if interpolation == "nearest":
        return resize_nearest(img, size)
    raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")


# ----------------------------------------------------------------------- pad / normalize
def pad_to(
    img: np.ndarray,
    seg: np.ndarray | None = None,
    size: tuple[int, int] = (512, 512),
    pad_val: float = 0,
    seg_pad_val: int = 255,
    channels_first: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """mmseg ``Pad(size=size)``: pad at the bottom and right to ``size=(height, width)``.

    Args:
        img: ``(H, W, C)`` (or ``(C, H, W)`` with ``channels_first=True``) array of
            any dtype; padded with ``pad_val``.
        seg: optional ``(H, W)`` label map, padded with ``seg_pad_val``.

    Raises:
        ValueError: if the image is already larger than ``size``.
    """
    height, width = img.shape[1:3] if channels_first else img.shape[:2]
    target_h, target_w = size
    if height > target_h or width > target_w:
        raise ValueError(f"cannot pad a {height}x{width} image to the smaller {size}")
    pad_hw = [(0, target_h - height), (0, target_w - width)]
    img_pad = [(0, 0), *pad_hw] if channels_first else pad_hw + [(0, 0)] * (img.ndim - 2)
    img = np.pad(img, img_pad, constant_values=pad_val)
    if seg is not None:
        if seg.shape[:2] != (height, width):
            raise ValueError(f"label size {seg.shape[:2]} differs from image size {(height, width)}")
        seg = np.pad(seg, pad_hw, constant_values=seg_pad_val)
    return img, seg


def normalize(
    img: np.ndarray,
    mean: Sequence[float] = ADE20K_MEAN,
    std: Sequence[float] = ADE20K_STD,
) -> np.ndarray:
    """mmcv ``imnormalize``: ``(img - mean) * (1 / std)`` per RGB channel.

    Args:
        img: ``(H, W, 3)`` RGB array (any numeric dtype).

    Returns:
        ``(3, H, W)`` ``float32`` array (channels first, ready for a model).
    """
    mean32 = np.asarray(mean, dtype=np.float64).astype(np.float32)
    stdinv32 = (1.0 / np.asarray(std, dtype=np.float64)).astype(np.float32)
    out = (img.astype(np.float32) - mean32) * stdinv32
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def env_flag(name: str) -> bool:
    """An on/off environment variable: ``1``, ``true``, ``yes`` or ``on`` (any case) turn it on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_number(name: str, default, kind=int):
    """A positive number from the environment variable ``name`` (``default`` when unset or empty)."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a number") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"environment variable {name}={value!r} must be positive")
    return number


@dataclass(frozen=True)
class ServingLimits:
    """What one request may cost a server: the ``image-segmentation`` pipeline, the Inference Endpoints handlers, the
    demo app (:func:`open_served_images` reads the image limits; the segmentation pipeline all of them).

    Every limit is checked before the work it bounds (pixels from the image's header before decoding, forward passes
    from the sizes before any is run), with an error naming the limit. An owner raises a limit with the constructor
    argument or the environment variable ``AGENT_HF_<NAME>`` (e.g. ``AGENT_HF_MAX_PIXELS=100000000``); see
    :meth:`from_env`, the one reader of those variables.

    Attributes:
        max_pixels: pixels (width x height) of an input image.
        max_bytes: encoded bytes of an input image (raw, base64-decoded, or an URL's body).
        max_images: images in one call.
        max_ratios: test scales in one call.
        min_ratio, max_ratio: range of each test scale (it multiplies the processor's ``scale``).
        max_windows: forward passes per image (scales x flips x sliding windows).
        url_timeout: total seconds to fetch an URL (when URLs are allowed); connect_timeout: to connect.
    """

    max_pixels: int = 25_000_000
    max_bytes: int = 32 * 2**20
    max_images: int = 16
    max_ratios: int = 8
    min_ratio: float = 0.25
    max_ratio: float = 2.0
    max_windows: int = 128
    url_timeout: float = 30.0
    connect_timeout: float = 10.0

    @classmethod
    def from_env(cls, **overrides) -> ServingLimits:
        """The defaults, replaced by ``AGENT_HF_MAX_PIXELS``, ``AGENT_HF_MAX_BYTES``, ... where set, then by
        ``overrides``."""
        values = {}
        for field in fields(cls):
            kind = int if field.type in ("int", int) else float
            values[field.name] = env_number(f"AGENT_HF_{field.name.upper()}", field.default, kind)
        return cls(**{**values, **overrides})

    def check_settings(self, settings: dict) -> None:
        """Refuses validated inference settings (``ratios``, see ``segmentation_inference.check_inference_settings``)
        beyond the limits."""
        ratios = settings["ratios"]
        if len(ratios) > self.max_ratios:
            raise ValueError(f"{len(ratios)} ratios, more than the limit of {self.max_ratios} (max_ratios)")
        outside = [r for r in ratios if not self.min_ratio <= r <= self.max_ratio]
        if outside:
            raise ValueError(
                f"ratio {outside[0]:g} is outside the allowed range [{self.min_ratio:g}, {self.max_ratio:g}] "
                "(min_ratio, max_ratio)"
            )

    def check_forward_passes(self, count: int) -> None:
        """Refuses settings that need ``count`` forward passes for one image, more than ``max_windows``."""
        if count > self.max_windows:
            raise ValueError(
                f"these settings need {count} forward passes for this image, more than the limit of "
                f"{self.max_windows} (max_windows); use a larger crop_size/stride, fewer ratios or no flip"
            )

    def check_inputs(self, inputs) -> list:
        """A request's ``inputs`` (one image or a non-empty list of at most ``max_images``) as a list, refusing
        anything that cannot hold an image (a JSON number, object or nested list, ``None``) with a ``ValueError``
        naming its type."""
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not items:
            raise ValueError("inputs is an empty list; send at least one image")
        if len(items) > self.max_images:
            raise ValueError(
                f"{len(items)} images in one request, more than the limit of {self.max_images} (max_images)"
            )
        for item in items:
            if isinstance(item, (bool, int, float, dict, list, tuple)) or item is None:
                raise ValueError(f"an input must be an image (encoded bytes or base64), got {type(item).__name__}")
        return items


def open_served_image(
    image: ImageSource,
    *,
    allow_paths: bool | None = None,
    allow_urls: bool | None = None,
    limits: ServingLimits | None = None,
    timeout: float | None = None,
):
    """:func:`open_image` as a server must run it on what strangers send: no file path or URL unless the owner allows
    them (``allow_paths``/``allow_urls``; default: ``AGENT_HF_ALLOW_PATHS``/``AGENT_HF_ALLOW_URLS``, off when unset),
    pixels, bytes and an URL's time bounded by ``limits`` (default: :meth:`ServingLimits.from_env`; ``timeout``
    replaces its ``url_timeout``)."""
    limits = ServingLimits.from_env() if limits is None else limits
    return open_image(
        image,
        limits.url_timeout if timeout is None else timeout,
        allow_paths=env_flag("AGENT_HF_ALLOW_PATHS") if allow_paths is None else allow_paths,
        allow_urls=env_flag("AGENT_HF_ALLOW_URLS") if allow_urls is None else allow_urls,
        max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels,
        connect_timeout=limits.connect_timeout,
    )


def open_served_images(
    inputs, *, allow_paths: bool | None = None, allow_urls: bool | None = None, limits: ServingLimits | None = None
) -> list:
    """A request's ``inputs`` (see :meth:`ServingLimits.check_inputs`), each opened by :func:`open_served_image`."""
    limits = ServingLimits.from_env() if limits is None else limits
    return [
        open_served_image(item, allow_paths=allow_paths, allow_urls=allow_urls, limits=limits)
        for item in limits.check_inputs(inputs)
    ]


class ImageTooLargeError(ValueError):
    """An image refused for its size, from its header, before any pixel is decoded."""


def check_pixels(width: int, height: int, what: str, max_pixels: int | None) -> None:
    """Refuses an image of more than ``max_pixels`` pixels (``None``: no limit), naming it and the limit."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is a {width}x{height} image ({width * height / 1e6:.1f} megapixels), more than the limit of "
            f"{max_pixels / 1e6:g} megapixels (max_pixels)"
        )


def _check_bytes(size: int, what: str, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ValueError(f"{what} holds {size} bytes, more than the limit of {max_bytes} bytes (max_bytes)")


def _decode(data: bytes, what: str, max_pixels: int | None = None) -> Image.Image:
    """Decodes an encoded image, applying its EXIF orientation (as OpenCV's ``imread``, which mmseg uses, does).

    The size is read from the header and checked against ``max_pixels`` before any pixel is decoded.
    """
    errors = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # checked below, with a clearer message
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:  # PIL refuses twice its own limit from the header, before us
        limit = f"; the limit is {max_pixels / 1e6:g} megapixels (max_pixels)" if max_pixels is not None else ""
        raise ImageTooLargeError(f"{what} is too large to decode ({error}){limit}") from None
    except Image.UnidentifiedImageError as error:  # its message names an in-memory object, not the input
        detail = "empty" if not data else "no image format PIL reads"
        raise ValueError(f"{what} is not a decodable image ({detail})") from error
    except errors as error:
        raise ValueError(f"{what} is not a decodable image ({type(error).__name__}: {error})") from error
    with image:
        check_pixels(*image.size, what, max_pixels)
        try:
            image.load()
            return ImageOps.exif_transpose(image)
        except errors as error:
            raise ValueError(f"{what} is not a decodable image ({type(error).__name__}: {error})") from error


def _shut(sock: socket.socket) -> None:
    # Called by a timer when the total time is up: a blocked recv returns at once (slow-drip servers).
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def fetch_url(url: str, timeout: float = 30.0, connect_timeout: float = 10.0, max_bytes: int | None = None) -> bytes:
    """The body of an ``http(s)://`` URL, within ``timeout`` seconds in all (however slowly the server answers).

    Redirects are not followed; the body is refused as soon as it exceeds ``max_bytes``.

    Raises:
        ValueError: any failure (connection refused, timeout, HTTP status other than 200, too large).
    """
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"the URL timeout must be a positive number of seconds, got {timeout!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url[:100]!r} is not an http(s) URL")
    deadline = time.monotonic() + timeout
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=min(connect_timeout, timeout))
    timer = None
    try:
        connection.connect()
        sock = connection.sock  # http.client drops its reference once a response says "Connection: close"
        timer = threading.Timer(max(deadline - time.monotonic(), 0.0), _shut, (sock,))
        timer.daemon = True
        timer.start()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers={"User-Agent": "agent-hf"})
        response = connection.getresponse()
        if response.status != 200:
            raise ValueError(f"{url} answered HTTP {response.status} {response.reason} (redirects are not followed)")
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit():
            _check_bytes(int(length), f"the content of {url}", max_bytes)
        chunks, size = [], 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the total time ran out")
            sock.settimeout(remaining)
            chunk = response.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            _check_bytes(size, f"the content of {url}", max_bytes)
            chunks.append(chunk)
        if time.monotonic() >= deadline:  # the timer shut the connection: what came is a truncated body
            raise TimeoutError("the total time ran out")
        if length is not None and length.isdigit() and size < int(length):
            raise ValueError(f"{url} sent {size} of the {length} bytes it announced")
        return b"".join(chunks)
    except (OSError, http.client.HTTPException) as error:
        if time.monotonic() >= deadline - 0.01 or isinstance(error, TimeoutError):
            raise ValueError(f"{url} did not send a complete answer within {timeout:g} s") from error
        raise ValueError(f"could not fetch {url} ({type(error).__name__}: {error})") from error
    finally:
        if timer is not None:
            timer.cancel()
        connection.close()


def open_image(
    image: ImageSource,
    timeout: float | None = None,
    *,
    allow_paths: bool = True,
    allow_urls: bool = True,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    connect_timeout: float = 10.0,
) -> ImageInput:
    """An image from any of the forms users and Inference Endpoints send, for :func:`to_rgb_array`.

    Args:
        image: a PIL image or numpy array (returned as is); encoded image bytes; a string holding a file path, an
            ``http(s)://`` URL, a ``data:image/...;base64,`` URL or base64-encoded image bytes; an ``os.PathLike``.
        timeout: total seconds an URL may take (``None``: 30), however slowly its server answers.
        allow_paths: accept file paths; when ``False`` no string is ever looked up on the file system, so errors
            tell nothing about the server's files.
        allow_urls: accept ``http(s)://`` URLs.
        max_bytes: most encoded bytes accepted (raw bytes, decoded base64, an URL's body); ``None``: no limit.
        max_pixels: most pixels (width x height) accepted, read from the header before decoding; ``None``: only
            PIL's own decompression-bomb limit.
        connect_timeout: seconds to wait for an URL's server to accept the connection.

    Returns:
        A PIL image in its file's own mode (16-bit PNGs stay 16-bit, so :func:`to_rgb_array` converts them as
        training does), or the array given.

    Raises:
        ValueError: bytes or a string that do not decode to an image, or that a limit refuses.
        TypeError: any other type.
    """
    if isinstance(image, Image.Image):
        check_pixels(*image.size, "the image", max_pixels)
        return image
    if isinstance(image, np.ndarray):
        if image.ndim >= 2:
            check_pixels(image.shape[1], image.shape[0], "the image array", max_pixels)
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        _check_bytes(len(image), "the input", max_bytes)
        return _decode(bytes(image), f"the {len(image)} input bytes", max_pixels)
    if isinstance(image, os.PathLike):
        if not allow_paths:
            raise ValueError("file paths are not accepted here (allow_paths is off)")
        image = os.fspath(image)
    if not isinstance(image, str):
        accepted = ["a PIL image", "a numpy array", "encoded image bytes", "a base64 string"]
        accepted += ["a file path"] * allow_paths + ["an URL"] * allow_urls
        raise TypeError(f"expected {', '.join(accepted[:-1])} or {accepted[-1]}, got {type(image).__name__}")
    if max_bytes is not None and len(image) > max_bytes * 4 // 3 + 4096:  # base64 takes 4 characters per 3 bytes
        raise ValueError(f"the input string holds {len(image)} characters, more than max_bytes={max_bytes} allows")
    if image.startswith(("http://", "https://")):
        if not allow_urls:
            raise ValueError("image URLs are not accepted here (allow_urls is off); send the image's bytes or base64")
        content = fetch_url(image, 30.0 if timeout is None else timeout, connect_timeout, max_bytes)
        return _decode(content, f"the content of {image}", max_pixels)
    if image.startswith("data:"):
        header, _, payload = image.partition(",")
        if not header.endswith(";base64"):
            raise ValueError(f"the data URL {header[:60]!r}... is not base64-encoded")
        content = _base64_bytes(payload, "the data URL")
        _check_bytes(len(content), "the data URL", max_bytes)
        return _decode(content, "the data URL's content", max_pixels)
    if allow_paths and os.path.isfile(image):
        _check_bytes(os.path.getsize(image), f"the file {image!r}", max_bytes)
        with open(image, "rb") as file:
            return _decode(file.read(), f"the file {image!r}", max_pixels)
    if not allow_paths:
        # One answer for any string that is not a base64 image, so that no answer depends on the server's files.
        not_an_image = f"{_excerpt(image)} is not a base64-encoded image (file paths are not accepted here)"
        try:
            content = base64.b64decode("".join(image.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(not_an_image) from None
        _check_bytes(len(content), "the base64 string", max_bytes)
        try:
            return _decode(content, "the base64 string's content", max_pixels)
        except ImageTooLargeError:
            raise
        except ValueError:
            raise ValueError(not_an_image) from None
    content = _base64_bytes(image, None)
    _check_bytes(len(content), "the base64 string", max_bytes)
    return _decode(content, "the base64 string's content", max_pixels)


def _excerpt(text: str) -> str:
    return f"{text[:60]!r}{'...' if len(text) > 60 else ''}"


def _base64_bytes(text: str, what: str | None) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        what = what or _excerpt(text)
        raise ValueError(
            f"{what} is neither an existing file, an http(s) URL nor base64-encoded image bytes"
        ) from error


def prepare_image(
    image: ImageInput,
    scale: float | tuple[int, int] = (2048, 512),
    mean: Sequence[float] = ADE20K_MEAN,
    std: Sequence[float] = ADE20K_STD,
    name: str | None = None,
) -> np.ndarray:
    """mmseg's test pipeline for one image: :func:`to_rgb_array` -> :func:`resize_keep_ratio` -> :func:`normalize`.

    Args:
        image: PIL image or array (see :func:`to_rgb_array`).
        scale: ``(long_edge, short_edge)`` bound of the keep-ratio resize, or a scale factor.
        mean, std: RGB normalization in 0-255 units.
        name: identifies the image in error messages.

    Returns:
        ``(3, h, w)`` ``float32`` array, ``(w, h) = rescale_size(W, H, scale)``.
    """
    return normalize(resize_keep_ratio(to_rgb_array(image, name), scale), mean, std)
