"""The Zigbee AES-MMO hash (Matyas-Meyer-Oseas on AES-128) and HMAC built on it.

Zigbee specification (05-3474) annex B.6: H_0 = 0^128, H_i = E(H_{i-1}, M_i) xor M_i over
the padded message. Padding appends a 1 bit, zeros, and the message length in bits:
as 16 bits when it is below 2^16 bits, else as 32 bits followed by 16 zero bits, so
the total is a whole number of 16-byte blocks. (zigpy's ``aes_mmo_hash`` knows only
the short form; Key Establishment messages are all short.)
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import SeError

BLOCK = 16
_IPAD = bytes([0x36] * BLOCK)
_OPAD = bytes([0x5C] * BLOCK)


def _pad(data: bytes) -> bytes:
    bits = len(data) * 8
    if bits < 1 << 16:
        tail = bits.to_bytes(2, "big")
    elif bits < 1 << 32:
        tail = bits.to_bytes(4, "big") + bytes(2)
    else:
        raise SeError(f"AES-MMO: {len(data)} bytes is beyond the hash's 2^32-bit limit")
    zeros = -(len(data) + 1 + len(tail)) % BLOCK
    return data + b"\x80" + bytes(zeros) + tail


def aes_mmo(data: bytes) -> bytes:
    """The 16-byte Zigbee AES-MMO hash of ``data``."""
    padded = _pad(bytes(data))
    h = bytes(BLOCK)
    for i in range(0, len(padded), BLOCK):
        block = padded[i : i + BLOCK]
        encrypted = Cipher(algorithms.AES(h), modes.ECB()).encryptor().update(block)
        h = bytes(e ^ p for e, p in zip(encrypted, block))
    return h


def hmac_mmo(key: bytes, data: bytes) -> bytes:
    """HMAC (FIPS 198) on AES-MMO: block and output 16 bytes, ipad 0x36, opad 0x5C."""
    if len(key) > BLOCK:
        key = aes_mmo(key)
    key = key.ljust(BLOCK, b"\x00")
    inner = aes_mmo(bytes(k ^ p for k, p in zip(key, _IPAD)) + bytes(data))
    return aes_mmo(bytes(k ^ p for k, p in zip(key, _OPAD)) + inner)
