"""Tests of the chunked AEAD stream format (streamer._pipeline.aead)."""

from __future__ import annotations

import itertools
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streamer._errors import PayloadTooLarge, StreamerError
from streamer._pipeline.aead import (
    HEADER_SIZE,
    MAX_CHUNK_SIZE,
    TAG_SIZE,
    DecryptionError,
    Decryptor,
    Encryptor,
    FormatError,
    TruncatedError,
    chunk_for_offset,
    ciphertext_offset,
    ciphertext_size,
    generate_master_key,
    parse_header,
    plaintext_size,
    rewrap_header,
    whole_chunks,
)

CS = 64  # small chunks keep the tests fast
SEALED = CS + TAG_SIZE
MAX_COUNTER = 0xFFFF_FFFF


@pytest.fixture
def key() -> bytes:
    return generate_master_key()


def split(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at random points, with some empty pieces."""
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def encrypt(key: bytes, data: bytes, *, chunk_size: int = CS, pieces: int = 1) -> bytes:
    """The whole stream, header included, feeding ``data`` in ``pieces`` equal-ish parts."""
    enc = Encryptor.new(key, chunk_size=chunk_size)
    step = max(1, -(-len(data) // pieces))
    body = [enc.feed(data[i : i + step]) for i in range(0, len(data), step)]
    return enc.header + b"".join(body) + enc.finish()


def decrypt(key: bytes, stream: bytes, *, start_chunk: int = 0, pieces: int = 1) -> bytes:
    """Decrypt ``stream`` (header, then chunks from ``start_chunk``) and finish."""
    dec = Decryptor(key, stream[:HEADER_SIZE], start_chunk=start_chunk)
    body = stream[HEADER_SIZE:]
    step = max(1, -(-len(body) // pieces))
    out = [dec.feed(body[i : i + step]) for i in range(0, len(body), step)]
    return b"".join(out) + dec.finish()


def chunks_of(stream: bytes) -> list[bytes]:
    body = stream[HEADER_SIZE:]
    return [body[i : i + SEALED] for i in range(0, len(body), SEALED)]


def join(header: bytes, chunks: list[bytes]) -> bytes:
    return header + b"".join(chunks)


# -- round trips -------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 3 * CS + 17, 1000])
def test_round_trip_with_random_splits(key: bytes, size: int) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    for _ in range(10):
        enc = Encryptor.new(key, chunk_size=CS)
        body = b"".join(enc.feed(piece) for piece in split(data, rng)) + enc.finish()
        assert len(enc.header) + len(body) == ciphertext_size(size, CS)
        dec = Decryptor(key, enc.header)
        plain = b"".join(dec.feed(piece) for piece in split(body, rng)) + dec.finish()
        assert plain == data


def test_round_trip_random_sizes(key: bytes) -> None:
    rng = random.Random(1234)
    for _ in range(50):
        data = rng.randbytes(rng.randrange(20 * CS))
        stream = encrypt(key, data, pieces=rng.randrange(1, 9))
        assert decrypt(key, stream, pieces=rng.randrange(1, 9)) == data


def test_round_trip_default_one_mib_chunks(key: bytes) -> None:
    data = random.Random(7).randbytes(3 * (1 << 20) + 12345)
    enc = Encryptor.new(key)
    assert enc.chunk_size == 1 << 20
    stream = encrypt(key, data, chunk_size=1 << 20, pieces=7)
    assert len(stream) == ciphertext_size(len(data), 1 << 20)
    assert decrypt(key, stream, pieces=5) == data


def test_feed_accepts_bytearray_and_memoryview(key: bytes) -> None:
    data = bytearray(random.Random(3).randbytes(3 * CS + 5))
    enc = Encryptor.new(key, chunk_size=CS)
    body = enc.feed(memoryview(data)[:100]) + enc.feed(data[100:]) + enc.finish()
    dec = Decryptor(key, enc.header)
    assert dec.feed(bytearray(body)) + dec.finish() == data


def test_feed_releases_the_callers_buffer_even_on_error(key: bytes) -> None:
    stream = bytearray(encrypt(key, bytes(3 * CS)))
    stream[HEADER_SIZE + SEALED + 5] ^= 1  # chunk 1 fails inside feed()
    body = stream[HEADER_SIZE:]
    dec = Decryptor(key, bytes(stream[:HEADER_SIZE]))
    with pytest.raises(DecryptionError) as caught:  # keeps feed()'s frame alive
        dec.feed(body)
    assert caught.value.code == "decryption_failed"
    body += b"resizable"  # would raise BufferError if feed() still held a view of it


def test_encryptor_emits_each_chunk_once_full(key: bytes) -> None:
    enc = Encryptor.new(key, chunk_size=CS)
    sizes = [len(enc.feed(b"x")) for _ in range(3 * CS)]
    assert sizes == ([0] * (CS - 1) + [SEALED]) * 3
    assert enc.chunks_written == 3
    assert enc.plaintext_bytes == 3 * CS
    enc.feed(b"y" * 5)
    assert enc.plaintext_bytes == 3 * CS + 5
    assert len(enc.finish()) == 5 + TAG_SIZE
    assert enc.chunks_written == 4
    assert enc.plaintext_bytes == 3 * CS + 5


def test_multiple_of_chunk_size_ends_with_empty_last_chunk(key: bytes) -> None:
    stream = encrypt(key, b"z" * (2 * CS))
    assert len(stream) == HEADER_SIZE + 2 * SEALED + TAG_SIZE
    assert decrypt(key, stream) == b"z" * (2 * CS)


def test_decryptor_releases_each_full_chunk_immediately(key: bytes) -> None:
    data = random.Random(5).randbytes(3 * CS + 9)
    stream = encrypt(key, data)
    dec = Decryptor(key, stream[:HEADER_SIZE])
    chunks = chunks_of(stream)
    assert dec.feed(chunks[0][:-1]) == b""
    assert dec.feed(chunks[0][-1:]) == data[:CS]
    assert dec.feed(chunks[1] + chunks[2]) == data[CS : 3 * CS]
    assert dec.chunks_read == 3
    assert dec.feed(chunks[3]) == b""  # a short chunk waits for finish()
    assert dec.finish() == data[3 * CS :]


def test_streams_are_fresh_per_file(key: bytes) -> None:
    data = b"same plaintext" * 10
    one, two = encrypt(key, data), encrypt(key, data)
    h1, h2 = parse_header(one), parse_header(two)
    assert h1.nonce_prefix != h2.nonce_prefix
    assert h1.wrap_nonce != h2.wrap_nonce
    assert h1.wrapped_key != h2.wrapped_key
    assert one[HEADER_SIZE:] != two[HEADER_SIZE:]


def test_format_matches_specification(key: bytes) -> None:
    """Decrypt with bare AES-GCM as the module docstring specifies, as another reader would."""
    data = random.Random(9).randbytes(CS + 10)
    stream = encrypt(key, data)
    assert stream[:4] == b"STRM" and stream[4] == 1 and stream[5] == 1
    assert struct.unpack(">I", stream[6:10]) == (CS,)
    aad, prefix = stream[:17], stream[10:17]
    data_key = AESGCM(key).decrypt(stream[17:29], stream[29:HEADER_SIZE], aad)
    aead = AESGCM(data_key)
    first, last = chunks_of(stream)
    assert aead.decrypt(prefix + struct.pack(">IB", 0, 0), first, aad) == data[:CS]
    assert aead.decrypt(prefix + struct.pack(">IB", 1, 1), last, aad) == data[CS:]


# -- tampering ---------------------------------------------------------------


@pytest.mark.parametrize("position", [0, CS - 1, CS, SEALED + 3, 2 * SEALED + 1, -1])
def test_flipped_ciphertext_byte_fails(key: bytes, position: int) -> None:
    stream = bytearray(encrypt(key, bytes(2 * CS + 20)))
    stream[HEADER_SIZE + position if position >= 0 else position] ^= 0x01
    with pytest.raises(DecryptionError, match="failed authentication"):
        decrypt(key, bytes(stream))


def test_swapped_chunks_fail(key: bytes) -> None:
    stream = encrypt(key, random.Random(1).randbytes(3 * CS + 1))
    c = chunks_of(stream)
    with pytest.raises(DecryptionError, match="chunk 0 failed"):
        decrypt(key, join(stream[:HEADER_SIZE], [c[1], c[0], c[2], c[3]]))


def test_dropped_middle_chunk_fails(key: bytes) -> None:
    stream = encrypt(key, random.Random(2).randbytes(3 * CS + 1))
    c = chunks_of(stream)
    with pytest.raises(DecryptionError, match="chunk 1 failed"):
        decrypt(key, join(stream[:HEADER_SIZE], [c[0], c[2], c[3]]))


def test_duplicated_chunk_fails(key: bytes) -> None:
    stream = encrypt(key, random.Random(2).randbytes(3 * CS + 1))
    c = chunks_of(stream)
    with pytest.raises(DecryptionError, match="chunk 1 failed"):
        decrypt(key, join(stream[:HEADER_SIZE], [c[0], c[0], c[1], c[2], c[3]]))


@pytest.mark.parametrize("kept", [0, 1, 2])
def test_truncation_at_chunk_boundary_fails_at_finish(key: bytes, kept: int) -> None:
    stream = encrypt(key, random.Random(3).randbytes(3 * CS))  # 3 full chunks + empty last
    dec = Decryptor(key, stream[:HEADER_SIZE])
    dec.feed(stream[HEADER_SIZE : ciphertext_offset(kept, CS)])  # accepted so far
    with pytest.raises(TruncatedError):
        dec.finish()


def test_dropped_last_chunk_fails(key: bytes) -> None:
    stream = encrypt(key, random.Random(4).randbytes(2 * CS + 30))
    with pytest.raises(TruncatedError):
        decrypt(key, join(stream[:HEADER_SIZE], chunks_of(stream)[:-1]))


def test_dropped_empty_last_chunk_fails(key: bytes) -> None:
    for data in (b"", b"q" * CS):
        stream = encrypt(key, data)
        with pytest.raises(TruncatedError):
            decrypt(key, stream[:-TAG_SIZE])


@pytest.mark.parametrize("cut", [1, TAG_SIZE - 1, TAG_SIZE, 40, SEALED - 1])
def test_truncation_inside_a_chunk_fails(key: bytes, cut: int) -> None:
    stream = encrypt(key, random.Random(5).randbytes(2 * CS + 30))
    with pytest.raises(DecryptionError):
        decrypt(key, stream[: ciphertext_offset(1, CS) + cut])


@pytest.mark.parametrize("garbage", [b"\x00", bytes(TAG_SIZE), bytes(SEALED), bytes(500)])
def test_trailing_garbage_fails(key: bytes, garbage: bytes) -> None:
    for size in (0, CS, 2 * CS + 30):
        stream = encrypt(key, bytes(size))
        with pytest.raises(DecryptionError):
            decrypt(key, stream + garbage)


def test_chunk_from_another_stream_fails(key: bytes) -> None:
    one, two = encrypt(key, bytes(2 * CS)), encrypt(key, bytes(2 * CS))
    spliced = join(one[:HEADER_SIZE], [chunks_of(one)[0], *chunks_of(two)[1:]])
    with pytest.raises(DecryptionError, match="chunk 1 failed"):
        decrypt(key, spliced)


def test_wrong_master_key_fails(key: bytes) -> None:
    stream = encrypt(key, b"secret")
    with pytest.raises(DecryptionError, match="wrong master key"):
        Decryptor(generate_master_key(), stream[:HEADER_SIZE])
    with pytest.raises(DecryptionError, match="wrong master key"):
        Encryptor.resume(generate_master_key(), stream[:HEADER_SIZE], 0)


# chunk size (kept in range), nonce prefix, wrap nonce, wrapped key, its tag
@pytest.mark.parametrize("offset", [8, 9, 10, 16, 17, 28, 29, HEADER_SIZE - 1])
def test_tampered_header_fails(key: bytes, offset: int) -> None:
    stream = bytearray(encrypt(key, bytes(100)))
    stream[offset] ^= 0x01
    with pytest.raises(DecryptionError, match="wrong master key or tampered"):
        Decryptor(key, bytes(stream[:HEADER_SIZE]))


def test_chunks_are_bound_to_the_header_fields(key: bytes) -> None:
    """Even a key holder who rewraps the data key cannot change a header field unnoticed."""
    stream = encrypt(key, b"short file")  # one last chunk, readable with any chunk size
    data_key = AESGCM(key).decrypt(stream[17:29], stream[29:HEADER_SIZE], stream[:17])
    forged_aad = stream[:6] + struct.pack(">I", 2 * CS) + stream[10:17]
    forged = forged_aad + stream[17:29] + AESGCM(key).encrypt(stream[17:29], data_key, forged_aad)
    dec = Decryptor(key, forged)  # the wrapping is valid...
    dec.feed(stream[HEADER_SIZE:])
    with pytest.raises(DecryptionError, match="last chunk 0 failed"):
        dec.finish()  # ...but the chunk authenticates the original chunk size


def test_rewrap_header_rotates_master_key(key: bytes) -> None:
    data = random.Random(6).randbytes(2 * CS + 3)
    stream = encrypt(key, data)
    new_key = generate_master_key()
    header = rewrap_header(stream[:HEADER_SIZE], key, new_key)
    assert len(header) == HEADER_SIZE
    assert header[:17] == stream[:17] and header[17:] != stream[17:HEADER_SIZE]
    assert decrypt(new_key, header + stream[HEADER_SIZE:]) == data
    with pytest.raises(DecryptionError):
        Decryptor(key, header)
    with pytest.raises(DecryptionError):
        rewrap_header(stream[:HEADER_SIZE], new_key, key)


# -- header parsing ----------------------------------------------------------


def test_parse_header_round_trips(key: bytes) -> None:
    enc = Encryptor.new(key, chunk_size=CS)
    header = parse_header(enc.header + b"chunks follow")
    assert header.chunk_size == CS
    assert len(header.nonce_prefix) == 7
    assert header.to_bytes() == enc.header
    assert len(enc.header) == HEADER_SIZE == 77


@pytest.mark.parametrize("length", [0, 3, 5, 6, HEADER_SIZE - 1])
def test_short_header_rejected(key: bytes, length: int) -> None:
    header = Encryptor.new(key).header
    with pytest.raises(FormatError, match=r"too short|need 77"):
        parse_header(header[:length])


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(0, ord("X"), "bad magic"), (4, 2, "version 2"), (4, 0, "version 0"), (5, 2, "algorithm 2")],
)
def test_unknown_header_fields_rejected(key: bytes, offset: int, value: int, message: str) -> None:
    header = bytearray(Encryptor.new(key).header)
    header[offset] = value
    with pytest.raises(FormatError, match=message):
        parse_header(header)
    with pytest.raises(FormatError, match=message):
        Decryptor(key, bytes(header))


@pytest.mark.parametrize("chunk_size", [0, MAX_CHUNK_SIZE + 1, 0xFFFF_FFFF])
def test_chunk_size_out_of_range_rejected(key: bytes, chunk_size: int) -> None:
    header = bytearray(Encryptor.new(key).header)
    header[6:10] = struct.pack(">I", chunk_size)
    with pytest.raises(FormatError, match="chunk size"):
        parse_header(header)
    with pytest.raises(ValueError, match="chunk size"):
        Encryptor.new(key, chunk_size=chunk_size)


def test_errors_are_streamer_errors() -> None:
    for error in (FormatError("x"), DecryptionError("x"), TruncatedError("x")):
        assert isinstance(error, StreamerError)
        assert error.status_code == 422
    assert isinstance(TruncatedError("x"), DecryptionError)
    assert {FormatError.code, DecryptionError.code, TruncatedError.code} == {
        "invalid_format",
        "decryption_failed",
        "truncated_stream",
    }


def test_master_key_must_be_32_bytes() -> None:
    assert len(generate_master_key()) == 32
    assert generate_master_key() != generate_master_key()
    with pytest.raises(ValueError, match="32 bytes"):
        Encryptor.new(bytes(16))


# -- ranges and resumption ---------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [(0, 1), (5, 70), (64, 128), (130, 331), (200, 331)])
def test_range_read_from_chunk_boundary(key: bytes, start: int, end: int) -> None:
    data = random.Random(8).randbytes(5 * CS + 11)  # 331 bytes
    stream = encrypt(key, data)
    first, skip = chunk_for_offset(start, CS)
    last, _ = chunk_for_offset(end - 1, CS)
    ct_start, ct_end = ciphertext_offset(first, CS), ciphertext_offset(last + 1, CS)
    dec = Decryptor(key, stream[:HEADER_SIZE], start_chunk=first)
    plain = dec.feed(stream[ct_start:ct_end])
    if ct_end >= len(stream):  # the range includes the (short) last chunk
        plain += dec.finish()
    assert plain[skip : skip + end - start] == data[start:end]


def test_range_read_to_end_verifies_completeness(key: bytes) -> None:
    data = random.Random(8).randbytes(5 * CS + 11)
    stream = encrypt(key, data)
    for first in range(6):
        tail = stream[:HEADER_SIZE] + stream[ciphertext_offset(first, CS) :]
        assert decrypt(key, tail, start_chunk=first) == data[first * CS :]
    with pytest.raises(DecryptionError, match="chunk 2 failed"):  # wrong start index
        decrypt(key, stream[:HEADER_SIZE] + stream[ciphertext_offset(3, CS) :], start_chunk=2)


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3, 5, 100, 3 * CS, 3 * CS + 40])
def test_resume_matches_uninterrupted_stream(key: bytes, crash_after: int) -> None:
    data = random.Random(10).randbytes(4 * CS + 21)
    first = Encryptor.new(key, chunk_size=CS)
    written = first.header + first.feed(data[:crash_after])  # the process dies here
    n = whole_chunks(len(written), CS)
    assert n == first.chunks_written == crash_after // CS
    written = written[: ciphertext_offset(n, CS)]

    resumed = Encryptor.resume(key, written[:HEADER_SIZE], n)
    assert resumed.header == first.header
    assert resumed.plaintext_bytes == n * CS
    stream = written + resumed.feed(data[n * CS :]) + resumed.finish()

    uninterrupted = Encryptor.resume(key, first.header, 0)
    assert stream == uninterrupted.header + uninterrupted.feed(data) + uninterrupted.finish()
    assert decrypt(key, stream) == data


def test_whole_chunks_ignores_a_torn_chunk() -> None:
    assert whole_chunks(HEADER_SIZE, CS) == 0
    assert whole_chunks(HEADER_SIZE + SEALED - 1, CS) == 0
    assert whole_chunks(HEADER_SIZE + 2 * SEALED + 5, CS) == 2
    with pytest.raises(FormatError):
        whole_chunks(HEADER_SIZE - 1, CS)


def test_counter_limit(key: bytes) -> None:
    header = Encryptor.new(key, chunk_size=CS).header
    enc = Encryptor.resume(key, header, MAX_COUNTER)
    with pytest.raises(PayloadTooLarge):
        enc.feed(bytes(CS))  # a non-last chunk at the final counter leaves no room for the end

    enc = Encryptor.resume(key, header, MAX_COUNTER)
    tail = enc.feed(b"end") + enc.finish()  # but the last chunk may use it
    dec = Decryptor(key, header, start_chunk=MAX_COUNTER)
    assert dec.feed(tail) + dec.finish() == b"end"

    dec = Decryptor(key, header, start_chunk=MAX_COUNTER)
    with pytest.raises(DecryptionError, match="exceeds"):
        dec.feed(bytes(SEALED))
    with pytest.raises(ValueError, match="out of range"):
        Encryptor.resume(key, header, MAX_COUNTER + 1)
    with pytest.raises(ValueError, match="out of range"):
        Decryptor(key, header, start_chunk=-1)


def test_use_after_finish_is_an_error(key: bytes) -> None:
    enc = Encryptor.new(key, chunk_size=CS)
    body = enc.finish()
    with pytest.raises(RuntimeError):
        enc.feed(b"more")
    with pytest.raises(RuntimeError):
        enc.finish()
    dec = Decryptor(key, enc.header)
    assert dec.feed(body) + dec.finish() == b""
    with pytest.raises(RuntimeError):
        dec.feed(b"")
    with pytest.raises(RuntimeError):
        dec.finish()


# -- size arithmetic ---------------------------------------------------------


def test_offset_helpers() -> None:
    assert chunk_for_offset(0, CS) == (0, 0)
    assert chunk_for_offset(CS - 1, CS) == (0, CS - 1)
    assert chunk_for_offset(CS, CS) == (1, 0)
    assert chunk_for_offset(5 * CS + 7, CS) == (5, 7)
    assert ciphertext_offset(0, CS) == HEADER_SIZE
    assert ciphertext_offset(3, CS) == HEADER_SIZE + 3 * (CS + 16)
    assert ciphertext_size(0, CS) == HEADER_SIZE + 16
    assert ciphertext_size(CS - 1, CS) == HEADER_SIZE + CS - 1 + 16
    assert ciphertext_size(CS, CS) == HEADER_SIZE + CS + 32
    assert ciphertext_size(5 << 30, 1 << 20) == HEADER_SIZE + (5 << 30) + 5121 * 16
    with pytest.raises(ValueError):
        chunk_for_offset(-1, CS)
    with pytest.raises(ValueError):
        ciphertext_size(-1, CS)


def test_plaintext_size_inverts_ciphertext_size() -> None:
    for size in range(10 * CS):
        assert plaintext_size(ciphertext_size(size, CS), CS) == size
    assert plaintext_size(ciphertext_size(5 << 30, 1 << 20), 1 << 20) == 5 << 30


@pytest.mark.parametrize(
    "size",
    [0, HEADER_SIZE, HEADER_SIZE + 15, HEADER_SIZE + SEALED, HEADER_SIZE + SEALED + 15],
)
def test_plaintext_size_rejects_incomplete_streams(size: int) -> None:
    with pytest.raises(FormatError, match="not the size of a complete stream"):
        plaintext_size(size, CS)
