"""Label Studio's brush RLE: the `value.rle` of a `brushlabels` region, to and from a binary mask.

Label Studio stores a brush mask as the RGBA image of the canvas (height x width x 4 bytes, row-major),
packed with thi.ng's `rle-pack` bit format:

    header   32 bits  number of values n (= height * width * 4)
              5 bits  word size - 1 (8-bit words: 7)
          4 x 4 bits  the four run-length field sizes - 1 (Label Studio uses 3, 4, 8, 16 bits)
    chunks   1 bit    1 = a run of one repeated word, 0 = literal words
             2 bits   which run-length field size follows
             s bits   chunk length - 1
             then one word (run) or `length` words (literal)
    padding  zero bits up to a whole byte

The mask is the alpha channel (> 0). The encoder makes the same choices as Label Studio's converter
(single values as 1-word literals, runs in the smallest field that fits), so its bytes match what Label
Studio itself reads and writes; the decoder reads any valid stream, literal chunks of any length included.
"""

from __future__ import annotations

import numpy as np

_SIZES = (3, 4, 8, 16)  # run-length field sizes in bits, as Label Studio writes them
_WORD = 8
_MAX_RUN = 1 << 16


class BrushRLEError(ValueError):
    """A brush RLE that does not decode, or does not fit the image it claims to describe."""


def encode_mask(mask: np.ndarray) -> list[int]:
    """A 2-D boolean mask -> Label Studio brush RLE (a list of byte values), white opaque where True."""
    if mask.ndim != 2:
        raise BrushRLEError(f"mask: must be 2-D (height, width), got shape {mask.shape}")
    rgba = np.repeat(mask.astype(np.uint8).reshape(-1) * 255, 4)
    return encode(rgba)


def decode_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> a (height, width) boolean mask (alpha channel > 0)."""
    values = decode(rle)
    if values.size != height * width * 4:
        raise BrushRLEError(
            f"rle: holds {values.size} values, but a {height}x{width} RGBA image needs {height * width * 4}"
        )
    return values.reshape(height, width, 4)[:, :, 3] > 0


def encode(values: np.ndarray) -> list[int]:
    """Pack a 1-D array of 8-bit values."""
    values = np.asarray(values)
    if values.ndim != 1 or (values.size and (values.min() < 0 or values.max() > 255)):
        raise BrushRLEError("values: must be a 1-D array of integers in [0, 255]")
    bits = [f"{values.size:032b}", f"{_WORD - 1:05b}", "".join(f"{s - 1:04b}" for s in _SIZES)]
    if values.size:
        ends = np.append(np.flatnonzero(values[1:] != values[:-1]), values.size - 1)
        lengths = np.diff(np.append(-1, ends))
        for length, value in zip(lengths.tolist(), values[ends].tolist(), strict=True):
            word = f"{value:08b}"
            if length == 1:
                bits.append("0" + "00" + "000" + word)  # a literal chunk of one word
                continue
            while length > 0:
                chunk = min(length, _MAX_RUN)
                index = next(i for i, s in enumerate(_SIZES) if chunk <= 1 << s)
                bits.append(f"1{index:02b}{chunk - 1:0{_SIZES[index]}b}{word}")
                length -= chunk
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[i : i + 8], 2) for i in range(0, len(stream), 8)]


class _Bits:
    def __init__(self, data: list[int]) -> None:
        try:
            raw = np.asarray(data, dtype=np.int64)
        except (TypeError, ValueError) as exc:
            raise BrushRLEError(f"rle: must be a list of byte values ({exc})") from exc
        if raw.ndim != 1 or (raw.size and (raw.min() < 0 or raw.max() > 255)):
            raise BrushRLEError("rle: must be a flat list of integers in [0, 255]")
        self.bits = np.unpackbits(raw.astype(np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.bits.size:
            raise BrushRLEError("rle: ends in the middle of a chunk (truncated data)")
        out = 0
        for b in self.bits[self.pos : self.pos + n].tolist():
            out = (out << 1) | b
        self.pos += n
        return out


def decode(rle: list[int]) -> np.ndarray:
    """Unpack a brush RLE into its 1-D array of values."""
    stream = _Bits(rle)
    n = stream.read(32)
    word = stream.read(5) + 1
    sizes = [stream.read(4) + 1 for _ in range(4)]
    out = np.zeros(n, dtype=np.uint8 if word <= 8 else np.uint16 if word <= 16 else np.uint32)
    i = 0
    while i < n:
        repeat = stream.read(1)
        j = i + 1 + stream.read(sizes[stream.read(2)])
        if j > n:
            raise BrushRLEError(f"rle: a chunk runs past the {n} values the header announces")
        if repeat:
            out[i:j] = stream.read(word)
        else:
            out[i:j] = [stream.read(word) for _ in range(j - i)]
        i = j
    return out
