"""radios/fragmentation.py's sans-I/O half: how each stack's host cuts a long message
(EmberZNet's fragmentation library, TI's MT_AF huge-data exchange) and reads an
AF.IncomingMsgExt that holds only its data's length."""

from __future__ import annotations

import pytest

from radios.fragmentation import (
    MAX_BLOCKS,
    ZNP_MAX_INLINE,
    ZNP_RETRIEVE_MAX,
    ZNP_STORE_MAX,
    Block,
    FragmentationError,
    ezsp_blocks,
    parse_incoming_ext,
    retrieve_chunks,
    store_chunks,
    windows,
)


def test_ezsp_blocks_cut_the_message_and_say_count_and_index_in_the_group_id() -> None:
    message = bytes(range(200))
    blocks = ezsp_blocks(message, 80)
    assert [len(b.data) for b in blocks] == [80, 80, 40]
    assert b"".join(b.data for b in blocks) == message
    assert [b.group_id for b in blocks] == [0x0300, 0x0301, 0x0302]  # HIGH_LOW_TO_INT(count, index)


def test_a_1400_byte_message_is_18_blocks_unsecured_and_20_secured() -> None:
    assert len(ezsp_blocks(bytes(1405), 82 - 2)) == 18
    assert len(ezsp_blocks(bytes(1405), 82 - 9 - 2)) == 20


def test_ezsp_block_limits() -> None:
    assert len(ezsp_blocks(bytes(80 * MAX_BLOCKS), 80)) == MAX_BLOCKS
    with pytest.raises(FragmentationError, match="need 256 blocks of 80, more than 255"):
        ezsp_blocks(bytes(80 * MAX_BLOCKS + 1), 80)
    with pytest.raises(FragmentationError, match="block size 0"):
        ezsp_blocks(b"x", 0)
    assert ezsp_blocks(b"", 80) == [Block(0, 1, b"")]


def test_windows_group_the_blocks() -> None:
    blocks = ezsp_blocks(bytes(10), 1)
    assert [[b.index for b in w] for w in windows(blocks, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(windows(blocks, 1)) == 10
    for size in (0, 9):
        with pytest.raises(FragmentationError, match=f"window size {size} is not 1..8"):
            windows(blocks, size)


def test_store_chunks_end_with_the_zero_length_store_that_sends() -> None:
    message = bytes(i % 256 for i in range(600))
    chunks = store_chunks(message)
    assert chunks[-1] == (600, b"")
    assert [index for index, _ in chunks[:-1]] == [0, ZNP_STORE_MAX, 2 * ZNP_STORE_MAX]
    assert all(len(data) <= ZNP_STORE_MAX for _, data in chunks)
    assert b"".join(data for _, data in chunks) == message
    assert ZNP_STORE_MAX == 247 and ZNP_MAX_INLINE == 230


def test_retrieve_chunks_end_with_the_zero_length_retrieve_that_frees() -> None:
    assert retrieve_chunks(600) == [(0, ZNP_RETRIEVE_MAX), (248, 248), (496, 104), (600, 0)]
    assert ZNP_RETRIEVE_MAX == 248


def _incoming_ext(length: int, data: bytes) -> bytes:
    fields = (
        b"\x00\x00"  # GroupId
        + b"\x04\x07"  # ClusterId 0x0704
        + b"\x02" + b"\x34\xd4" + bytes(6)  # SrcAddrModeAddress: NWK 0xD434
        + b"\x02"  # SrcEndpoint
        + b"\xcd\xab"  # SrcPanId
        + b"\x0a\x00\xc8\x00"  # DstEndpoint, WasBroadcast, LQI, SecurityUse
        + (1234).to_bytes(4, "little") + b"\x07"  # TimeStamp, TSN
    )
    return fields + length.to_bytes(2, "little") + data + b"\x34\xd4\x00"


def test_a_held_incoming_message_has_its_length_and_no_data() -> None:
    fields, length, held = parse_incoming_ext(_incoming_ext(1405, b""))
    assert (length, held) == (1405, True)
    assert fields["TimeStamp"] == 1234 and fields["TSN"] == 7 and fields["ClusterId"] == 0x0704
    assert fields["SrcAddrModeAddress"].address == 0xD434 and fields["MsgResultRadius"] == 0


def test_an_incoming_message_with_its_data_is_not_held() -> None:
    fields, length, held = parse_incoming_ext(_incoming_ext(3, b"abc"))
    assert (length, held, bytes(fields["Data"])) == (3, False, b"abc")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_incoming_ext(10, b"abc"), r"field Data at offset 25: 10 bytes announced, 6 present"),
        (_incoming_ext(3, b"abc") + b"\x00", r"1 bytes after the last field at offset 33"),
        (_incoming_ext(3, b"abc")[:3], r"field ClusterId at offset 2"),
    ],
)
def test_unreadable_incoming_ext_is_refused_naming_field_and_offset(payload: bytes, message: str) -> None:
    with pytest.raises(FragmentationError, match=message):
        parse_incoming_ext(payload)
