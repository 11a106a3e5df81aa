"""Hostile input, round 2: what a stranger can send to a served model folder (the Inference Endpoints handler and the
``image-segmentation`` pipeline behind it) is bounded in memory and time, reads no server file and fetches no URL
unless the owner allowed it, and fails with one clear line.

The handler is the folder's own ``handler.py`` (written by ``save_model_folder``), loading the folder's own code with
``trust_remote_code``; URLs are served by real HTTP servers on 127.0.0.1 (one that answers, one that never answers,
one that drips a byte at a time).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import resource
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_swin_config
from PIL import Image
from transformers import AutoModelForSemanticSegmentation

from agent_hf.models.image_processing_agent import AgentImageProcessor
from agent_hf.models.segmentation_inference import ServingLimits, check_inference_settings, slide_logits
from agent_hf.saving import save_model_folder


# ------------------------------------------------------------------------------------------------------ helpers
def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


PHOTO = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
PHOTO_PNG = png_bytes(PHOTO)
PHOTO_B64 = base64.b64encode(PHOTO_PNG).decode("ascii")


def grey_png(width: int, height: int) -> bytes:
    """A valid grey PNG of ``width x height`` written row by row (small in memory, small on disk)."""
    compressor, row, chunks = zlib.compressobj(9), b"\0" + b"\x80" * width, []
    for _ in range(height):
        chunks.append(compressor.compress(row))
    chunks.append(compressor.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(chunks)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = AutoModelForSemanticSegmentation.from_config(tiny_swin_config()).eval()
    return Path(save_model_folder(model, tmp_path_factory.mktemp("hostile") / "agent-swin-tiny"))


def load_handler_class(folder: Path):
    spec = importlib.util.spec_from_file_location(f"handler_{id(folder)}", folder / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler


@pytest.fixture(scope="module")
def handler(model_folder):
    """The handler as Inference Endpoints builds it (no environment variable set: the owner's defaults)."""
    return load_handler_class(model_folder)(str(model_folder))


def refused(handler, request) -> str:
    """The one-line error of a request the handler must refuse."""
    with pytest.raises(ValueError) as info:
        handler(request)
    message = str(info.value)
    assert "\n" not in message and message
    return message


# ------------------------------------------------------------------------------------------- local HTTP servers
class _ImageServer(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        body = PHOTO_PNG if self.path == "/photo.png" else b"x" * 4096
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def image_server():
    _ImageServer.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _ImageServer.hits
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def raw_server(behaviour):
    """A TCP server on 127.0.0.1 whose connections are handled by ``behaviour(connection, stop)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=behaviour, args=(connection, stop), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/photo.png"
    finally:
        stop.set()
        listener.close()


def never_answers(connection, stop):
    stop.wait(30)
    connection.close()


def drips(connection, stop):
    """Sends the headers, then one byte of a large body every 0.1 s (each read returns before any socket timeout)."""
    try:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
        while not stop.wait(0.1):
            connection.sendall(b"\x89")
    except OSError:
        pass
    finally:
        connection.close()


def drips_headers(connection, stop):
    """Never finishes its headers: one header byte every 0.1 s."""
    try:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\n")
        while not stop.wait(0.1):
            connection.sendall(b"X")
    except OSError:
        pass
    finally:
        connection.close()


# ------------------------------------------------------------------------------------------ paths and URLs
def test_handler_reads_no_server_file_and_tells_nothing_about_them(handler, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO_PNG)
    existing = refused(handler, {"inputs": str(photo)})
    missing = refused(handler, {"inputs": str(tmp_path / "missing.png")})
    assert "not accepted" in existing
    # The same answer whether the file exists or not (once the path itself is taken out of the text).
    assert existing.replace(str(photo), "P") == missing.replace(str(tmp_path / "missing.png"), "P")
    passwd, nowhere = refused(handler, {"inputs": "/etc/passwd"}), refused(handler, {"inputs": "/etc/nowhere"})
    assert passwd.replace("passwd", "X") == nowhere.replace("nowhere", "X")
    assert "decodable" not in passwd and "existing" not in passwd
    etc = refused(handler, {"inputs": "/etc"})  # valid base64 characters: reported as what it is
    assert etc == "'/etc' is not a base64-encoded image (file paths are not accepted here)"
    assert "not accepted" in refused(handler, {"inputs": [PHOTO_B64, str(photo)]})


def test_handler_fetches_no_url_unless_the_owner_allows(handler, model_folder, monkeypatch):
    with image_server() as (address, hits):
        message = refused(handler, {"inputs": f"{address}/photo.png"})
        assert "URLs are not accepted" in message and hits == []  # nothing was fetched
        monkeypatch.setenv("AGENT_HF_ALLOW_URLS", "1")
        allowing = load_handler_class(model_folder)(str(model_folder))
        answer = allowing({"inputs": f"{address}/photo.png"})
        assert hits == ["/photo.png"] and answer == handler({"inputs": PHOTO_B64})


def test_handler_answers_bytes_base64_and_images(handler):
    by_bytes = handler({"inputs": PHOTO_PNG})
    assert by_bytes == handler({"inputs": PHOTO_B64}) == handler({"inputs": PHOTO})
    assert by_bytes and all(set(segment) == {"label", "score", "mask"} for segment in by_bytes)
    assert handler({"inputs": [PHOTO_B64, PHOTO_PNG]}) == [by_bytes, by_bytes]


@pytest.mark.parametrize("behaviour", [never_answers, drips, drips_headers], ids=lambda f: f.__name__)
def test_allowed_urls_are_bounded_in_time(model_folder, monkeypatch, behaviour):
    monkeypatch.setenv("AGENT_HF_URL_TIMEOUT", "1.5")
    handler = load_handler_class(model_folder)(str(model_folder), allow_urls=True)
    with raw_server(behaviour) as url:
        start = time.monotonic()
        message = refused(handler, {"inputs": url})
        elapsed = time.monotonic() - start
    assert "within 1.5 s" in message and url in message
    assert elapsed < 4, f"the request took {elapsed:.1f} s"


def test_allowed_urls_are_bounded_in_size(model_folder, monkeypatch):
    monkeypatch.setenv("AGENT_HF_MAX_BYTES", "1000")
    handler = load_handler_class(model_folder)(str(model_folder), allow_urls=True)
    with image_server() as (address, hits):
        message = refused(handler, {"inputs": f"{address}/big.bin"})
    assert "max_bytes" in message and "4096 bytes" in message and hits == ["/big.bin"]


def test_allowed_paths_are_read(model_folder, tmp_path, monkeypatch):
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO_PNG)
    monkeypatch.setenv("AGENT_HF_ALLOW_PATHS", "true")
    allowing = load_handler_class(model_folder)(str(model_folder))
    assert allowing({"inputs": str(photo)}) == allowing({"inputs": PHOTO_PNG})


# ------------------------------------------------------------------------------------------------ limits
def test_a_13000x13000_png_is_refused_from_its_header(handler):
    data = grey_png(13000, 13000)
    assert len(data) < 1_000_000  # a small request
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    for request in ({"inputs": data}, {"inputs": base64.b64encode(data).decode("ascii")}):
        message = refused(handler, request)
        assert "13000x13000" in message and "max_pixels" in message
    elapsed = time.monotonic() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert elapsed < 2 and grown_mib < 100, (elapsed, grown_mib)  # decoding alone would take 169 MB, RGB 507 MB


def test_a_png_beyond_pils_own_limit_is_refused_as_too_large(handler):
    """20000x20000 (400 megapixels): PIL's decompression-bomb check refuses it while opening, before the handler's
    own limit is read; the answer still says the image is too large, not that it is no image."""
    data = grey_png(20000, 20000)
    for request in ({"inputs": data}, {"inputs": base64.b64encode(data).decode("ascii")}):
        message = refused(handler, request)
        assert "too large" in message and "max_pixels" in message and "not a base64" not in message, message


def test_request_bytes_and_images_are_limited(model_folder, handler, monkeypatch):
    assert "max_images" in refused(handler, {"inputs": [PHOTO_B64] * 17})
    assert "empty list" in refused(handler, {"inputs": []})
    monkeypatch.setenv("AGENT_HF_MAX_BYTES", "1000")
    small = load_handler_class(model_folder)(str(model_folder))
    assert "max_bytes" in refused(small, {"inputs": PHOTO_PNG})
    assert "max_bytes" in refused(small, {"inputs": PHOTO_B64})


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"ratios": [40]}, "outside the allowed range"),
        ({"ratios": [0.01]}, "outside the allowed range"),
        ({"ratios": json.loads("[Infinity]")}, "positive finite numbers"),
        ({"ratios": json.loads("[NaN]")}, "positive finite numbers"),
        ({"ratios": [1.0] * 9}, "max_ratios"),
        ({"ratios": "1.0"}, "ratios must be"),
        ({"mode": "slide", "crop_size": 8, "stride": 8}, "max_windows"),
        ({"mode": "slide", "crop_size": 64, "stride": 96}, "must not exceed crop_size"),
        ({"mode": "slide", "crop_size": 64.5}, "crop_size must be"),
        ({"mode": "slide", "crop_size": True}, "crop_size must be"),
        ({"mode": "slide", "crop_size": [64, 64, 64]}, "crop_size must be"),
        ({"mode": ["slide"]}, "mode must be one of"),
        ({"timeout": 1000}, "unknown argument"),
        ({"flip": "yes"}, "flip must be"),
    ],
)
def test_handler_refuses_costly_or_invalid_parameters_at_once(handler, parameters, message):
    start = time.monotonic()
    assert message in refused(handler, {"inputs": PHOTO_B64, "parameters": parameters})
    assert time.monotonic() - start < 2


def test_limits_are_raised_by_the_owner(model_folder, monkeypatch):
    monkeypatch.setenv("AGENT_HF_MAX_RATIO", "3")
    monkeypatch.setenv("AGENT_HF_MAX_WINDOWS", "10000")
    raised = load_handler_class(model_folder)(str(model_folder))
    assert raised({"inputs": PHOTO_B64, "parameters": {"ratios": [2.5]}})  # refused with the defaults
    assert raised.pipeline.limits.max_ratio == 3 and raised.pipeline.limits.max_windows == 10000
    monkeypatch.setenv("AGENT_HF_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="AGENT_HF_MAX_PIXELS='lots' is not a number"):
        ServingLimits.from_env()


def test_pipeline_limits_are_constructor_arguments_only(model_folder, tmp_path):
    from transformers import pipeline

    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO_PNG)
    segmenter = pipeline("image-segmentation", model=str(model_folder), trust_remote_code=True)
    assert segmenter(str(photo)) == segmenter(PHOTO)  # a library user may pass paths
    closed = pipeline(
        "image-segmentation",
        model=str(model_folder),
        trust_remote_code=True,
        allow_paths=False,
        limits=ServingLimits(max_pixels=100),
    )
    with pytest.raises(ValueError, match="not accepted"):
        closed(str(photo))
    with pytest.raises(ValueError, match="max_pixels"):
        closed(PHOTO)
    with pytest.raises(ValueError, match="unknown argument"):
        closed(PHOTO, limits=None)


# ------------------------------------------------------------------------------- silently wrong, tracebacks
def test_a_stride_larger_than_the_window_is_refused():
    with pytest.raises(ValueError, match="must not exceed crop_size"):
        check_inference_settings(mode="slide", crop_size=(64, 64), stride=(65, 32))
    model = AutoModelForSemanticSegmentation.from_config(tiny_swin_config()).eval()
    with pytest.raises(ValueError, match="the stride not above the crop"):
        slide_logits(model, torch.zeros(1, 3, 96, 96), crop_size=(32, 32), stride=(48, 48))
    with pytest.raises(ValueError, match="must not exceed crop_size"):
        AgentImageProcessor(crop_size=(64, 64), stride=(96, 96))


@pytest.mark.parametrize("sizes", [[(0, 0)], [(120, -5)], [(1.5, 2)], [(120,)], [(True, 5)]])
def test_post_processing_refuses_impossible_sizes(sizes):
    processor = AgentImageProcessor()
    logits = torch.zeros(1, 5, 8, 8)
    with pytest.raises(ValueError, match=r"target_sizes\[0\] must be a \(height, width\) pair of positive ints"):
        processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=sizes)
    assert processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(3, 4)])[0].shape == (3, 4)


def test_the_handler_of_another_model_reads_no_server_file_either(tmp_path, monkeypatch):
    """save_model_folder gives every folder the handler; with transformers' own pipeline (a Segformer here), which
    opens paths and fetches URLs, the handler itself takes only base64 strings."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 1],
        mlp_ratios=[2, 2], decoder_hidden_size=8, num_labels=3, strides=[4, 2], patch_sizes=[7, 3],
    )  # fmt: skip
    folder = tmp_path / "segformer"
    save_model_folder(SegformerForSemanticSegmentation(config).eval(), folder, SegformerImageProcessor())
    handler = load_handler_class(folder)(str(folder))
    assert not hasattr(handler.pipeline, "allow_paths")
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO_PNG)
    with image_server() as (address, hits):
        for request in ({"inputs": str(photo)}, {"inputs": [f"{address}/photo.png"]}):
            assert "paths and URLs are not accepted" in refused(handler, request)
        assert hits == []
    for request, kind in (({"inputs": 5}, "int"), ({"inputs": [[PHOTO_B64]]}, "list"), ({"inputs": {}}, "dict")):
        assert f"an input must be an image (encoded bytes or base64), got {kind}" in refused(handler, request)
    assert handler({"inputs": PHOTO_B64}) == handler({"inputs": PHOTO})
    monkeypatch.setenv("AGENT_HF_ALLOW_PATHS", "1")
    assert handler({"inputs": str(photo)}) == handler({"inputs": PHOTO})
