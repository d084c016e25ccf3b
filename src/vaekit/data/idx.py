"""A reader for the IDX format of MNIST, Fashion-MNIST and KMNIST (plain or gzipped).

An IDX file is: two zero bytes, a type code byte, a byte giving the number of dimensions,
then one big-endian uint32 per dimension, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np
import torch
from torch import Tensor

__all__ = ["IDXFormatError", "read_idx"]

# IDX type code -> big-endian numpy dtype of the stored values.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """An IDX file is truncated, malformed or not an IDX file at all."""


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Reads an IDX file into a tensor of its stored shape and type.

    Gzip compression is detected from the file's first bytes, not from its name.

    Args:
        path: The `.gz` or plain IDX file.

    Returns:
        A tensor of the shape in the header, of dtype uint8, int8, int16, int32, float32 or
        float64 (native byte order), e.g. (60000, 28, 28) uint8 for MNIST's training images.

    Raises:
        FileNotFoundError: the file does not exist.
        IDXFormatError: the file is truncated, has trailing bytes, a bad magic number, an
            unknown type code, or a corrupt gzip stream. The message names the file.

    Example:
        >>> read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").shape
        torch.Size([10000])
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IDXFormatError(
                f"{os.fspath(path)}: corrupt or truncated gzip stream ({e}); "
                "download the file again"
            ) from e
    return _parse_idx(raw, os.fspath(path))


def _parse_idx(raw: bytes, where: str) -> Tensor:
    if len(raw) < 4:
        raise IDXFormatError(
            f"{where}: {len(raw)} bytes is too short for an IDX header (4 bytes at least); "
            "the file is truncated or empty"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise IDXFormatError(
            f"{where}: not an IDX file (its first two bytes are {raw[:2].hex()}, expected 0000)"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise IDXFormatError(f"{where}: unknown IDX type code 0x{type_code:02X} (known: {known})")
    if ndim == 0:
        raise IDXFormatError(f"{where}: the IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IDXFormatError(
            f"{where}: truncated header: {ndim} dimensions need {header_len} header bytes, "
            f"the file has {len(raw)}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    count = math.prod(dims)
    expected = count * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise IDXFormatError(
            f"{where}: file {problem}: the header promises shape {dims} of {dtype.name} "
            f"({expected} data bytes), the file holds {actual}; download it again"
        )
    values = np.frombuffer(raw, dtype=dtype, count=count, offset=header_len).reshape(dims)
    # Copy into native byte order: writable memory that torch can own.
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))
