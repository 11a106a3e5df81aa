"""Weight initialization on every supported transformers version: the `init` functions and `copy_into`.

Shipped to the Hub with the model: imports only torch/transformers.
"""

from __future__ import annotations

import torch

# Import shim: `transformers.initialization` (5.x) only touches parameters that were not loaded from a
# checkpoint; transformers 4.x uses torch's functions and skips loaded weights itself.
try:
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init


def copy_into(buffer: torch.Tensor, value: torch.Tensor) -> None:
    """Writes a derived buffer (e.g. a relative position index) during weight initialization."""
    if hasattr(init, "copy_"):  # transformers 5.x: skips buffers that were loaded
        init.copy_(buffer, value)
    else:
        with torch.no_grad():
            buffer.copy_(value)


__all__ = ["copy_into", "init"]
