"""Label Studio brush RLE: the bit layout of thi.ng rle-pack written out by hand, and round trips."""

from __future__ import annotations

import numpy as np
import pytest

from conceptengine.review.interop.brush import BrushRLEError, decode, decode_mask, encode, encode_mask

HEADER_SIZES = "0010" + "0011" + "0111" + "1111"  # run-length fields of 3, 4, 8 and 16 bits, each minus 1


def _bytes(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def test_encoder_writes_label_studio_chunks() -> None:
    values = np.array([5] + [0] * 10 + [255] * 300, dtype=np.uint8)
    expected = (
        f"{311:032b}" + "00111" + HEADER_SIZES  # 311 values of 8-bit words
        + "0" + "00" + "000" + "00000101"  # a single value: a literal chunk of one word
        + "1" + "01" + "1001" + "00000000"  # 10 zeros: a run in the 4-bit field (10 - 1 = 1001)
        + "1" + "11" + f"{299:016b}" + "11111111"  # 300 x 255: a run in the 16-bit field
    )  # fmt: skip
    assert encode(values) == _bytes(expected)


def test_decoder_reads_multi_word_literals_and_long_runs() -> None:
    # Label Studio's own (JS) encoder groups distinct values into literal chunks; ours never does.
    bits = (
        f"{3 + 70000:032b}"
        + "00111"
        + HEADER_SIZES
        + "0"
        + "00"
        + "010"
        + "00000001"
        + "00000010"
        + "00000011"
    )
    bits += "1" + "11" + f"{65535:016b}" + "00001001" + "1" + "11" + f"{4463:016b}" + "00001001"
    out = decode(_bytes(bits))
    assert out[:3].tolist() == [1, 2, 3] and out.size == 70003 and set(out[3:].tolist()) == {9}


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 48), (200, 200)])
def test_masks_round_trip(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    blobs = np.zeros(shape, dtype=bool)
    blobs[shape[0] // 4 : shape[0] // 2 + 1, shape[1] // 3 :] = True
    for mask in (rng.random(shape) > 0.5, blobs, np.zeros(shape, bool), np.ones(shape, bool)):
        rle = encode_mask(mask)
        assert all(0 <= b <= 255 for b in rle)
        np.testing.assert_array_equal(decode_mask(rle, *shape), mask)
        rgba = decode(rle).reshape(*shape, 4)
        assert set(np.unique(rgba).tolist()) <= {0, 255}  # white, opaque where the mask is


def test_bad_brush_rle_says_what_is_wrong() -> None:
    rle = encode_mask(np.ones((4, 4), bool))
    with pytest.raises(BrushRLEError, match=r"^rle: holds 64 values, but a 5x4 RGBA image needs 80"):
        decode_mask(rle, 5, 4)
    with pytest.raises(BrushRLEError, match="truncated"):
        decode(rle[:-1])
    with pytest.raises(BrushRLEError, match=r"^rle: must be a flat list of integers in \[0, 255\]"):
        decode([300, 1])
    with pytest.raises(BrushRLEError, match="^mask: must be 2-D"):
        encode_mask(np.ones((2, 2, 2), bool))
