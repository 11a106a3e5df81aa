"""The code that travels with every agent_hf model folder (and Hub repo): configs, modeling, agent attention and its
fast paths, heads, the image processors, mmseg's test-time inference, the ``image-segmentation`` pipeline and the
Inference Endpoints handlers.

A folder loaded with ``trust_remote_code=True`` where agent_hf is not installed runs copies of these modules, so they
import only each other (``from .x import Y``), the standard library and the runtime packages (torch, transformers,
numpy, PIL); ``tests/test_transformers_conventions.py`` holds them to it. The rest of agent_hf (conversion, training,
cards, publishing) lives outside this folder. This ``__init__`` imports nothing: use ``agent_hf``'s public names.
"""
