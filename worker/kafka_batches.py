"""How the worker reads Kafka record batches: every codec, with decompression bounded, and
no batch able to stop a fetch.

- **Codecs.** gzip, snappy, lz4 and zstd batches are read (cramjam, which aiokafka uses,
  plus the streaming decompressors of ``lz4`` and ``zstandard``).
- **Bounded decompression.** No batch is decompressed past ``limit_bytes``: gzip, lz4 and
  zstd stop at the limit, snappy checks each block's declared length first. A small
  "decompression bomb" costs at most the limit, never the memory it would inflate to.
- **Unreadable batches.** A batch that cannot be read — an unknown codec, a bad CRC, corrupt
  or truncated data, over the limit — does not raise out of the consumer (aiokafka would
  raise on every fetch of that partition, for ever). It becomes one *marker* record at the
  batch's last offset, whose headers say why; intake turns it into a rejection (logged,
  dead-lettered, counted) and the partition moves past the batch. Records of the batch
  read before the failure are delivered as usual.

aiokafka has no hook for this, so ``install`` replaces its decompression functions and
wraps its per-partition record iterator (``PartitionRecords``). Both are looked up where
aiokafka 0.11-0.15 keeps them; if they are not there, ``install`` says so and the worker
falls back to logging the failing fetch and retrying it (the partition then stalls, visible
as lag, but the worker stays alive).
"""

from __future__ import annotations

import secrets
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from inferpool.logs import get_logger
from inferpool.protocol.headers import header

log = get_logger("worker.kafka_batches")

#: The marker's header names carry a per-process random part: no producer can forge one.
_NONCE = secrets.token_hex(8)
UNREADABLE_HEADER = f"x-inferpool-unreadable-{_NONCE}"
FIRST_OFFSET_HEADER = f"x-inferpool-first-offset-{_NONCE}"

DEFAULT_LIMIT_BYTES = 64 * 1024 * 1024
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


class BatchTooLarge(Exception):
    """A batch would decompress past the limit."""


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """What a marker record says: the batch's offsets, and why it could not be read."""

    first_offset: int
    last_offset: int
    reason: str


def unreadable(record: Any) -> BatchFailure | None:
    """The marker's content, if ``record`` is a marker made by this process; else None."""
    if record.value is not None or record.key is not None:
        return None
    reason = header(record.headers, UNREADABLE_HEADER)
    if reason is None:
        return None
    first = header(record.headers, FIRST_OFFSET_HEADER)
    first_offset = int(first) if first else record.offset
    return BatchFailure(first_offset, record.offset, reason.decode("utf-8", "replace"))


# --- bounded decompression ----------------------------------------------------------------


def _over(limit: int) -> BatchTooLarge:
    return BatchTooLarge(f"the batch decompresses to more than {limit} bytes")


def gzip_decode(payload: Any, limit: int) -> bytes:
    data = bytes(payload)
    out: list[bytes] = []
    produced = 0
    while data:
        decompressor = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
        chunk = decompressor.decompress(data, limit - produced + 1)
        produced += len(chunk)
        if produced > limit:
            raise _over(limit)
        out.append(chunk)
        if not decompressor.eof:
            raise zlib.error("truncated gzip data")
        data = decompressor.unused_data  # the next gzip member, if any
    return b"".join(out)


def _varint(data: memoryview) -> int:
    value = shift = 0
    for byte in data[:5]:
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    raise ValueError("bad snappy length prefix")


def snappy_decode(payload: Any, limit: int) -> bytes:
    import cramjam

    data = memoryview(bytes(payload))
    if bytes(data[:8]) != _XERIAL_MAGIC:
        if _varint(data) > limit:
            raise _over(limit)
        return bytes(cramjam.snappy.decompress_raw(bytes(data)))
    out: list[bytes] = []
    produced, cursor = 0, 16
    while cursor < len(data):
        (size,) = struct.unpack_from("!i", data, cursor)
        block = data[cursor + 4 : cursor + 4 + size]
        produced += _varint(block)
        if produced > limit:
            raise _over(limit)
        out.append(bytes(cramjam.snappy.decompress_raw(bytes(block))))
        cursor += 4 + size
    return b"".join(out)


def lz4_decode(payload: Any, limit: int) -> bytes:
    import lz4.frame

    data = bytes(payload)
    out: list[bytes] = []
    produced = 0
    while data:
        decompressor = lz4.frame.LZ4FrameDecompressor()
        chunk = decompressor.decompress(data, max_length=limit - produced + 1)
        produced += len(chunk)
        if produced > limit:
            raise _over(limit)
        if not decompressor.eof:
            raise ValueError("truncated lz4 frame")
        out.append(chunk)
        data = decompressor.unused_data
    return b"".join(out)


def zstd_decode(payload: Any, limit: int) -> bytes:
    import io

    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(bytes(payload)), read_across_frames=True
    )
    with reader:
        data = reader.read(limit + 1)
    if len(data) > limit:
        raise _over(limit)
    return data


_DECODERS: dict[str, Callable[[Any, int], bytes]] = {
    "gzip_decode": gzip_decode,
    "snappy_decode": snappy_decode,
    "lz4_decode": lz4_decode,
    "zstd_decode": zstd_decode,
}


# --- unreadable batches become markers ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Marker:
    """Shaped as aiokafka's record, so its fetcher turns it into a ConsumerRecord."""

    offset: int
    timestamp: int
    headers: list[tuple[str, bytes]]
    timestamp_type: int = 0
    key: None = None
    value: None = None
    checksum: None = None


class _GuardedBatch:
    """One record batch; reading it never raises: a failure becomes a marker."""

    def __init__(self, batch: Any) -> None:
        self._batch = batch
        self._problem: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def validate_crc(self) -> bool:
        if not self._batch.validate_crc():
            self._problem = "the batch's CRC does not match its contents"
        return True

    def __iter__(self) -> Iterator[Any]:
        if self._problem is None:
            try:
                yield from self._batch
                return
            except Exception as error:  # whatever broke the batch, it is this batch alone
                self._problem = f"{type(error).__name__}: {error}"
        yield self._marker(self._problem)

    def _marker(self, reason: str) -> _Marker:
        first, last = self._batch.base_offset, self._batch.next_offset - 1
        log.warning("kafka.unreadable_batch", first_offset=first, last_offset=last,
                    reason=reason)
        return _Marker(last, getattr(self._batch, "first_timestamp", 0) or 0, [
            (UNREADABLE_HEADER, reason.encode()[:1024]),
            (FIRST_OFFSET_HEADER, str(first).encode()),
        ])


class _GuardedRecords:
    def __init__(self, records: Any) -> None:
        self._records = records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        return None if batch is None else _GuardedBatch(batch)


_installed = False


def install(limit_bytes: int = DEFAULT_LIMIT_BYTES) -> bool:
    """Bound decompression at ``limit_bytes`` and guard every batch, in this process.
    Idempotent (the last limit wins); False, with a warning, if aiokafka changed."""
    global _installed
    try:
        from aiokafka.consumer import fetcher
        from aiokafka.record import default_records
    except ImportError:
        log.warning("kafka_batches.not_installed", reason="aiokafka internals moved")
        return False
    modules = [default_records]
    try:
        from aiokafka.record._crecords import default_records as c_records

        modules.append(c_records)
    except ImportError:  # pure-Python records only
        pass
    if not all(hasattr(m, name) for m in modules for name in _DECODERS) or not hasattr(
        fetcher, "PartitionRecords"
    ):
        log.warning("kafka_batches.not_installed", reason="aiokafka internals moved")
        return False
    for module in modules:
        for name, decode in _DECODERS.items():
            setattr(module, name, _bounded(decode, limit_bytes))
    if not _installed:
        original = fetcher.PartitionRecords

        class GuardedPartitionRecords(original):  # type: ignore[misc, valid-type]
            def __init__(self, tp: Any, records: Any, *args: Any, **kwargs: Any) -> None:
                super().__init__(tp, _GuardedRecords(records), *args, **kwargs)

        fetcher.PartitionRecords = GuardedPartitionRecords
    _installed = True
    return True


def _bounded(decode: Callable[[Any, int], bytes], limit: int) -> Callable[[Any], bytes]:
    def decode_bounded(payload: Any) -> bytes:
        return decode(payload, limit)

    return decode_bounded
