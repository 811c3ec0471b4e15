"""``CompressionTransport``: zstd for messages above a size threshold, bomb-safe.

Wire format
    A message whose encoded JSON is at least ``threshold_bytes`` long travels as the
    notification ``rpc.raybus.zstd`` with params ``{"v": 1, "z": <base64 of one zstd
    frame of the encoded message>}``. Smaller messages, and messages zstd does not
    shrink, travel unchanged, so mixed traffic works both ways and a peer without this
    wrapper still reads every small message. Base64 costs a third of the compressed size;
    it keeps the frame valid JSON for every inner transport (stdio, SQS text bodies).

Size caps
    ``capabilities.max_message_bytes`` is the cap on the *decompressed* message
    (``max_decompressed_bytes``, by default the inner transport's cap): a send over it
    raises MessageTooLarge before anything is compressed, and a received frame is
    stream-decompressed in bounded chunks and abandoned as soon as the output passes the
    cap (:class:`DecompressedTooLarge`), so a small frame that would expand to gigabytes
    costs at most the cap in memory and time. A frame header that announces a larger
    content size is refused before any decompression, and the decoder's window is
    bounded too. A refused or undecodable frame is acknowledged (it can never succeed)
    and its error raised; the next ``receive`` returns the next message.

Compress inside encryption, never outside it: ciphertext does not compress. Mixing
attacker-chosen text with secrets in one compressed message leaks through its length
(CRIME/BREACH); keep the threshold above the size of messages that carry secrets, or do
not compress those streams.
"""

from __future__ import annotations

import base64
import binascii
import io

import zstandard

from transports.base import Delivery, Transport, TransportCapabilities
from transports.codec import DEFAULT_MAX_DEPTH, DecodeLimits, decode_message, encode_message
from transports.envelope import Envelope
from transports.errors import InvalidMessage, InvalidRequest, MessageTooLarge
from transports.message import TransportMessage
from transports.wrappers.delegate import TransportWrapper, extension_message, extension_params

__all__ = ["CompressionTransport", "DecompressedTooLarge"]

_KIND = "zstd"
_VERSION = 1
_CHUNK_BYTES = 64 * 1024
DEFAULT_THRESHOLD_BYTES = 1024
DEFAULT_LEVEL = 3


class DecompressedTooLarge(MessageTooLarge):
    """A compressed message expands past the cap; decompression stopped at the cap."""

    def __str__(self) -> str:
        return (
            f"a compressed message expands past the limit of {self.max_bytes} bytes "
            f"(decompression stopped at {self.size_bytes} bytes)"
        )


def _window_cap(max_bytes: int) -> int:
    # The decoder allocates the window a frame asks for. Frames that announce their size
    # (ours do) need at most a window as large as the content; frames written without it
    # use the level's window, 8 MiB at most below zstd's "ultra" levels. Anything larger
    # is refused before the decoder allocates it.
    return max(8 << 20, 1 << max_bytes.bit_length())


class CompressionTransport(TransportWrapper):
    """Compresses what it sends above a threshold; decompresses what it receives.

    Args:
        inner: the transport that carries the frames.
        threshold_bytes: messages whose encoded size is below this travel unchanged.
        level: zstd compression level (3 is zstd's default: fast, a good ratio on JSON).
        max_decompressed_bytes: the largest message sent or accepted after
            decompression; the inner transport's cap when None.
        max_depth: JSON nesting accepted in a decompressed message.
    """

    def __init__(
        self,
        inner: Transport,
        *,
        threshold_bytes: int = DEFAULT_THRESHOLD_BYTES,
        level: int = DEFAULT_LEVEL,
        max_decompressed_bytes: int | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        super().__init__(inner)
        if threshold_bytes < 0:
            raise ValueError("threshold_bytes must not be negative")
        cap = max_decompressed_bytes or inner.capabilities.max_message_bytes
        self._limits = DecodeLimits(max_message_bytes=cap, max_depth=max_depth)
        self._threshold = threshold_bytes
        self._compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._decompressor = zstandard.ZstdDecompressor(max_window_size=_window_cap(cap))
        inner_capabilities = inner.capabilities
        self._capabilities = TransportCapabilities(
            ordered=inner_capabilities.ordered,
            at_least_once=inner_capabilities.at_least_once,
            max_message_bytes=cap,
            carries_envelope=inner_capabilities.carries_envelope,
            peer_close_visible=inner_capabilities.peer_close_visible,
        )

    @property
    def capabilities(self) -> TransportCapabilities:
        return self._capabilities

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        """Send ``message``, compressed when that pays.

        Raises:
            MessageTooLarge: the encoded message is over ``max_decompressed_bytes``, or
                its compressed frame is still over the inner transport's cap.
            Anything the inner transport's ``send`` raises.
        """
        body = encode_message(message)
        cap = self._limits.max_message_bytes
        if len(body) > cap:
            raise MessageTooLarge(len(body), cap)
        if len(body) < self._threshold:
            await self._inner.send(message, envelope)
            return
        packed = base64.b64encode(self._compressor.compress(body)).decode("ascii")
        # ~60 bytes of notification around the base64; not worth it if that is no smaller.
        if len(packed) + 64 >= len(body):
            await self._inner.send(message, envelope)
            return
        await self._inner.send(extension_message(_KIND, _VERSION, z=packed), envelope)

    async def receive(self) -> Delivery:
        """The next message, decompressed if it came compressed.

        Raises:
            DecompressedTooLarge: a frame expands past the cap (acknowledged, skipped).
            InvalidRequest: a compressed frame that is not valid base64 or zstd.
            InvalidMessage: the decompressed bytes are not an acceptable message.
            Anything the inner transport's ``receive`` raises.
        """
        delivery = await self._inner.receive()
        try:
            params = extension_params(delivery.message, _KIND, _VERSION)
            if params is None:
                return delivery
            body = self._decompress(params.get("z"))
            message = decode_message(body, self._limits)
        except (InvalidMessage, MessageTooLarge):
            # It can never decode: settle it so a broker moves past it, then report it.
            await delivery.ack()
            raise
        return Delivery(message, delivery.envelope, len(body), delivery.ack, delivery.nack)

    def _decompress(self, packed: object) -> bytes:
        if not isinstance(packed, str):
            raise InvalidRequest("rpc.raybus.zstd: params.z must be a base64 string")
        try:
            frame = base64.b64decode(packed, validate=True)
        except binascii.Error:
            raise InvalidRequest("rpc.raybus.zstd: params.z is not valid base64") from None
        cap = self._limits.max_message_bytes
        try:
            announced = zstandard.frame_content_size(frame)
        except zstandard.ZstdError:
            raise InvalidRequest("rpc.raybus.zstd: params.z is not a zstd frame") from None
        if announced > cap:  # -1 when the header does not say
            raise DecompressedTooLarge(announced, cap)
        output = bytearray()
        try:
            with self._decompressor.stream_reader(
                io.BytesIO(frame), read_across_frames=True
            ) as reader:
                while len(output) <= cap:
                    chunk = reader.read(min(_CHUNK_BYTES, cap + 1 - len(output)))
                    if not chunk:
                        break
                    output += chunk
        except zstandard.ZstdError as exc:
            raise InvalidRequest(
                f"rpc.raybus.zstd: cannot decompress (corrupt data, or a window over "
                f"{_window_cap(cap)} bytes): {exc}"
            ) from None
        if len(output) > cap:
            raise DecompressedTooLarge(len(output), cap)
        return bytes(output)
