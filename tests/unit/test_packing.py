import numpy as np
import pytest

from harness.core.errors import ModelError
from quant_models.packing import pack_codes, payload_bytes, unpack_codes


def test_known_layout_msb_first():
    # 4-bit codes 1,2,3,15,0 -> 0x12 0x3f 0x00 (last byte zero-padded)
    assert pack_codes(np.array([1, 2, 3, 15, 0]), 4).tolist() == [0x12, 0x3F, 0x00]
    # 1-bit: 1,0,1,1,0,0,0,1 | 1 -> 0xb1 0x80
    assert pack_codes(np.array([1, 0, 1, 1, 0, 0, 0, 1, 1]), 1).tolist() == [0xB1, 0x80]
    # 3-bit: 5,7 -> 101 111 00 -> 0xbc
    assert pack_codes(np.array([5, 7]), 3).tolist() == [0xBC]


@pytest.mark.parametrize("bits", range(1, 9))
def test_round_trip(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, size=(50, 16))
    packed = pack_codes(codes, bits)
    assert packed.shape == (50, payload_bytes(16, bits))
    assert (unpack_codes(packed, 16, bits) == codes).all()


def test_paper_payload_is_32_bytes():
    assert 4 * payload_bytes(16, 4) == 32  # 256 bits per inference


def test_out_of_range_codes_are_refused():
    with pytest.raises(ModelError, match="out of range"):
        pack_codes(np.array([4]), 2)
    with pytest.raises(ModelError, match="cannot hold"):
        unpack_codes(np.zeros(3, np.uint8), 16, 4)
