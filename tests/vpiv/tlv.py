"""BER-TLV as PIV uses it (SP 800-73-4 part 2, appendix A): multi-byte tags, definite lengths."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["decode", "encode", "encode_length", "parse_dict"]


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    if length <= 0xFF:
        return bytes([0x81, length])
    if length <= 0xFFFF:
        return bytes([0x82]) + length.to_bytes(2, "big")
    return bytes([0x83]) + length.to_bytes(3, "big")


def encode(tag: int, value: bytes) -> bytes:
    """One TLV; `tag` as an integer whose big-endian bytes are the tag (0x5FC105, 0x7C, ...)."""
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big") + encode_length(len(value)) + value


def decode(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (tag, value) pairs of a concatenation of TLVs; raises ValueError if truncated."""
    pos = 0
    while pos < len(data):
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:  # multi-byte tag: continue while b8 is set
            while True:
                if pos >= len(data):
                    raise ValueError("truncated tag")
                tag = (tag << 8) | data[pos]
                pos += 1
                if not data[pos - 1] & 0x80:
                    break
        if pos >= len(data):
            raise ValueError("missing length")
        length = data[pos]
        pos += 1
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 3 or pos + count > len(data):
                raise ValueError("bad length")
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise ValueError("truncated value")
        yield tag, data[pos:pos + length]
        pos += length


def parse_dict(data: bytes) -> dict[int, bytes]:
    """TLVs as a dict (the last of repeated tags wins): enough for PIV's flat templates."""
    return dict(decode(data))
