"""Per-image correctness as compact text: one bit per test image, base64-encoded.

Torch-free, so that the report can decode records without importing torch.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


def encode_correct_bits(correct: Any) -> str:
    """Per-image correctness (bools, in test-set order) packed into bits, little-endian within each byte, as base64 ASCII."""
    bits = np.packbits(np.asarray(correct, dtype=bool).reshape(-1), bitorder="little")
    return base64.b64encode(bits.tobytes()).decode("ascii")


def decode_correct_bits(text: str, n: int) -> np.ndarray:
    """The ``n`` per-image correctness values (a bool array) that :func:`encode_correct_bits` encoded as ``text``.

    Raises ``ValueError`` when ``text`` is not base64 or does not hold exactly ``ceil(n / 8)`` bytes.
    """
    packed = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    if n < 0 or packed.size != -(-n // 8):
        raise ValueError(f"{packed.size} bytes of correctness bits cannot hold exactly {n} images")
    return np.unpackbits(packed, count=n, bitorder="little").astype(bool)
