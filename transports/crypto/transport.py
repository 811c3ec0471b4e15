"""``EncryptedTransport``: AES-256-GCM over any transport, for brokers we do not trust.

Between raybus's own clients (or gateway) and workers only, never toward a standard MCP
client. Each message is sealed as described in :mod:`transports.crypto.seal`; each
receiver keeps a replay window per sender (:mod:`transports.crypto.replay`).

What a receiver does with a message that does not open: it acknowledges the inner
delivery (a forged or replayed message must not stall a Kafka partition or come back
from SQS forever), logs one line without detail, and raises :class:`SealRejected`, the
same error for every reason. An authentic message whose body is not valid JSON-RPC
raises the codec's usual error, like any transport.

Sizes: ``capabilities.max_message_bytes`` is the plaintext body limit (``limits``); the
inner transport must carry :func:`~transports.crypto.seal.sealed_overhead_bytes` more
(base64 costs a third), or it refuses large messages with its own MessageTooLarge.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection

from transports.base import Delivery, Transport, TransportCapabilities
from transports.codec import DEFAULT_LIMITS, DecodeLimits, decode_message, encode_message
from transports.crypto.keyring import Keyring
from transports.crypto.replay import DEFAULT_MAX_SENDERS, DEFAULT_WINDOW, ReplayGuard
from transports.crypto.seal import Direction, Sealer, SealRejected, open_sealed
from transports.envelope import Envelope
from transports.errors import BusError, InvalidMessage, MessageTooLarge, TransportError
from transports.message import Notification, TransportMessage
from transports.wrappers.delegate import TransportWrapper

__all__ = ["EncryptedTransport", "SealedChannel"]

logger = logging.getLogger(__name__)


class SealedChannel:
    """One process's sealing and opening, for a transport or a broker backend's frames.

    Args:
        keyring: the keys; shared by every channel of the process (it counts their use).
        sender: this process's name as a sender (a random epoch is appended).
        sends: the direction this end sends in; it opens only the opposite direction.
        limits: bounds on the plaintext JSON-RPC body, both ways.
        replay_window: sequence numbers remembered per sender (>= 64).
        max_senders: senders whose windows are kept (the least recently heard go first).
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        sender: str,
        sends: Direction,
        limits: DecodeLimits = DEFAULT_LIMITS,
        replay_window: int = DEFAULT_WINDOW,
        max_senders: int = DEFAULT_MAX_SENDERS,
    ) -> None:
        self.keyring = keyring
        self.limits = limits
        self._sealer = Sealer(keyring, sender, sends)
        self._opens = sends.opposite
        self._guard = ReplayGuard(replay_window, max_senders)

    @property
    def sender_id(self) -> str:
        return self._sealer.sender_id

    def seal(
        self, body: bytes, envelope: Envelope | None, destination: str
    ) -> tuple[Notification, Envelope | None]:
        """The sealed message for ``destination`` and the readable envelope beside it.

        Raises:
            MessageTooLarge: ``body`` is over ``limits.max_message_bytes``; nothing sealed.
            KeyExhausted: the sealing key is at its cap and there is no next key.
        """
        if len(body) > self.limits.max_message_bytes:
            raise MessageTooLarge(len(body), self.limits.max_message_bytes)
        return self._sealer.seal(body, envelope, destination)

    def seal_body(
        self, body: bytes, envelope: Envelope | None, destination: str
    ) -> tuple[bytes, Envelope | None]:
        """As :meth:`seal`, the sealed message already encoded (for frame-level sends)."""
        sealed, clear = self.seal(body, envelope, destination)
        return encode_message(sealed), clear

    async def open(
        self, delivery: Delivery, destinations: frozenset[str], *, redelivers: bool
    ) -> Delivery:
        """The opened delivery; its ``ack``/``nack`` settle the replay window too.

        ``redelivers``: the inner transport delivers again after a nack (a broker), so a
        number is refused for good only once acked.

        Raises:
            SealRejected: did not open, or a replay (the inner delivery was acked).
            InvalidMessage / MessageTooLarge: authentic, but the body is not acceptable.
        """
        try:
            opened = open_sealed(
                self.keyring,
                delivery.message,
                delivery.envelope,
                direction=self._opens,
                destinations=destinations,
            )
        except SealRejected:
            await self._drop(delivery)
            raise
        window = self._guard.window_of(opened.sender_id)
        seq = opened.seq
        if not window.reserve(seq):
            await self._drop(delivery)
            raise SealRejected from None
        try:
            message = decode_message(opened.body, self.limits)
        except (InvalidMessage, MessageTooLarge):
            window.commit(seq)
            await delivery.ack()
            raise
        if not redelivers:
            window.commit(seq)
            return Delivery(message, opened.envelope, len(opened.body), delivery.ack, delivery.nack)

        async def ack() -> None:
            await delivery.ack()
            window.commit(seq)

        async def nack() -> None:
            window.release(seq)
            await delivery.nack()

        return Delivery(message, opened.envelope, len(opened.body), ack, nack)

    def open_body(self, message: TransportMessage, destinations: frozenset[str]) -> bytes:
        """The body of a sealed message sent without an envelope, for payloads that are
        not JSON-RPC (heartbeats); accepted once, at once (no ack step).

        Raises:
            SealRejected: did not open, or a replay.
        """
        opened = open_sealed(
            self.keyring, message, None, direction=self._opens, destinations=destinations
        )
        if not self._guard.window_of(opened.sender_id).accept(opened.seq):
            raise SealRejected
        return opened.body

    @staticmethod
    async def _drop(delivery: Delivery) -> None:
        logger.warning("dropped a sealed message that did not open")
        try:
            await delivery.ack()
        except BusError as exc:
            logger.warning("could not acknowledge the dropped message: %s", exc)


class EncryptedTransport(TransportWrapper):
    """A :class:`~transports.base.Transport` that seals what it sends and opens what it
    receives; everything else is the inner transport's.

    Args:
        inner: the transport that carries the sealed messages.
        keyring: the keys (see :class:`~transports.crypto.keyring.Keyring`).
        sender_id: this end's name as a sender.
        sends: the direction this end sends in (a client sends TO_WORKER).
        send_to: the destination bound into what this end sends (its topic or queue);
            None: each envelope's ``reply_to``.
        receive_as: the destinations this end accepts messages for.
        limits: bounds on the plaintext body.
    """

    def __init__(
        self,
        inner: Transport,
        keyring: Keyring,
        *,
        sender_id: str,
        sends: Direction = Direction.TO_WORKER,
        send_to: str | None = "",
        receive_as: Collection[str] = ("",),
        limits: DecodeLimits = DEFAULT_LIMITS,
        replay_window: int = DEFAULT_WINDOW,
        max_senders: int = DEFAULT_MAX_SENDERS,
    ) -> None:
        super().__init__(inner)
        self._send_to = send_to
        self._receive_as = frozenset(receive_as)
        self.channel = SealedChannel(
            keyring,
            sender=sender_id,
            sends=sends,
            limits=limits,
            replay_window=replay_window,
            max_senders=max_senders,
        )
        self._capabilities = dataclasses.replace(
            inner.capabilities, max_message_bytes=limits.max_message_bytes
        )

    @property
    def capabilities(self) -> TransportCapabilities:
        return self._capabilities

    def destination_for(self, envelope: Envelope | None) -> str:
        """Where a message with ``envelope`` goes (bound into its associated data).

        Raises:
            TransportError: no ``send_to`` and no ``reply_to`` in the envelope.
        """
        if self._send_to is not None:
            return self._send_to
        if envelope is None or envelope.reply_to is None:
            raise TransportError("an encrypted send needs send_to or an envelope with reply_to")
        return envelope.reply_to

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        """Seal and send (the inner transport's failure modes, plus KeyExhausted)."""
        sealed, clear = self.channel.seal(
            encode_message(message), envelope, self.destination_for(envelope)
        )
        await self._inner.send(sealed, clear)

    async def receive(self) -> Delivery:
        """The next message that opens (see :meth:`SealedChannel.open` for failures)."""
        delivery = await self._inner.receive()
        return await self.channel.open(
            delivery, self._receive_as, redelivers=self._inner.capabilities.at_least_once
        )
