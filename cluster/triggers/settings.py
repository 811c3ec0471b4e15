"""The ``triggers:`` section of a bus configuration: records on a topic call a tool.

::

    kafka: {bootstrap: "127.0.0.1:9092"}     # the broker of the trigger's topics
    triggers:
      - name: score-orders
        source: {kafka: {topic: orders, start: latest}}
        tool: score_order
        arguments: {order_id: "${value.id}"}  # a template (actors.triggers.template) ...
        # map: "myproject.triggers:order_args"  # ... or a callable(TriggerRecord) -> dict | None
        output: {kafka: {topic: order-scores}, format: envelope}
        dead_letter: {kafka: {topic: orders.dlq}}   # default: "<source topic>.dlq"
        max_in_flight: 16

Each problem is one line naming the field (``triggers[0].map: ...``); whole-section
checks (unique names, the kafka section, topics that would loop) are
:func:`trigger_problem`'s, called by ``BusConfig``'s own check.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actors.triggers.core import TriggerRules
from actors.triggers.template import Template, TemplateError
from transports.labels import checked_labels

__all__ = [
    "DeadLetterConfig",
    "KafkaSourceConfig",
    "KafkaTopicConfig",
    "OutputConfig",
    "Place",
    "RetryConfig",
    "SqsQueueConfig",
    "TriggerConfig",
    "TriggerSourceConfig",
    "trigger_problem",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Kafka's own rule for topic names (legal characters, at most 249 of them).
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _topic_name(value: str) -> str:
    if not _TOPIC.match(value) or value in (".", ".."):
        raise ValueError(f"topic {value!r} must be 1 to 249 of [A-Za-z0-9._-] (Kafka's rule)")
    return value


class KafkaTopicConfig(_Strict):
    topic: str

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _topic_name(value)


class KafkaSourceConfig(KafkaTopicConfig):
    group: str | None = Field(None, description="consumer group; default '<prefix>trigger.<name>'")
    # Kafka's own default: declaring a trigger must not replay a topic's history.
    start: Literal["latest", "earliest"] = "latest"


class SqsQueueConfig(_Strict):
    """A standard SQS queue, by name (on the bus's sqs endpoint) or by URL."""

    queue: str | None = None
    queue_url: str | None = None

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        if value is not None and not _QUEUE.match(value):
            raise ValueError(f"queue {value!r} must be 1 to 80 of [A-Za-z0-9_-] (a standard queue)")
        return value

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            name = parts.path.rsplit("/", 1)[-1]
            if (
                parts.scheme not in ("https", "http")
                or not parts.hostname
                or not _QUEUE.match(name)
            ):
                raise ValueError(
                    f"{value!r} is not a standard queue's URL (https://host/account/name)"
                )
        return value

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.queue is None) == (self.queue_url is None):
            raise ValueError("give exactly one of queue or queue_url")
        return self

    @property
    def name(self) -> str:
        return self.queue or (self.queue_url or "").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Place:
    """Where records are read or written: a Kafka topic, or an SQS queue (maybe by URL)."""

    broker: Literal["kafka", "sqs"]
    name: str
    url: str | None = None

    def __str__(self) -> str:
        return f"{self.broker}:{self.name}"


class _OnOneBroker(_Strict):
    kafka: KafkaTopicConfig | None = None
    sqs: SqsQueueConfig | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.kafka is None) == (self.sqs is None):
            raise ValueError("give exactly one of kafka or sqs")
        return self

    @property
    def place(self) -> Place:
        if self.kafka is not None:
            return Place("kafka", self.kafka.topic)
        assert self.sqs is not None  # exactly one: checked above
        return Place("sqs", self.sqs.name, self.sqs.queue_url)


class TriggerSourceConfig(_OnOneBroker):
    kafka: KafkaSourceConfig | None = None


class OutputConfig(_OnOneBroker):
    # envelope: {trigger, tool, source, key, result}; result: the CallToolResult;
    # structured: its structuredContent (a result without one is dead-lettered).
    format: Literal["envelope", "result", "structured"] = "envelope"


class DeadLetterConfig(_OnOneBroker):
    pass


class RetryConfig(_Strict):
    """Calls refused before running (overloaded, breaker open, draining, rate limited)."""

    max_attempts: int = Field(5, ge=1, le=100)
    backoff_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(30.0, gt=0)


class TriggerConfig(_Strict):
    name: str
    source: TriggerSourceConfig
    tool: str = Field(description="the tool's public name (namespace included)")
    arguments: dict[str, Any] | None = Field(None, description="a template per record")
    map: str | None = Field(None, description="'pkg.module:callable', record -> arguments")
    output: OutputConfig | None = None
    dead_letter: DeadLetterConfig | None = Field(None, description="default '<source>.dlq'")
    max_in_flight: int = Field(16, ge=1, le=10_000, description="the backpressure bound")
    timeout_s: float = Field(60.0, gt=0, description="per call")
    retry: RetryConfig = RetryConfig()
    tool_errors: Literal["dead_letter", "output"] = "dead_letter"
    ordered: bool = Field(False, description="one record per partition at a time")
    replicas: int = Field(1, ge=1, le=64, description="actors sharing the source's group")
    labels: dict[str, str] = Field(default_factory=dict, description="labels of its calls")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"trigger name {value!r} must match {_NAME.pattern}")
        return value

    @field_validator("arguments")
    @classmethod
    def _template(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Template.parse(value)
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("map")
    @classmethod
    def _map(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.match(value):
            raise ValueError(f"{value!r} must look like 'package.module:callable'")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return checked_labels(value)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.arguments is None) == (self.map is None):
            raise ValueError("give exactly one of arguments (a template) or map (a callable)")
        if self.retry.max_backoff_s < self.retry.backoff_s:
            raise ValueError("retry.max_backoff_s must be at least retry.backoff_s")
        return self

    @property
    def source_place(self) -> Place:
        return self.source.place

    @property
    def output_place(self) -> Place | None:
        return None if self.output is None else self.output.place

    @property
    def dead_letter_place(self) -> Place:
        """Given, or beside the source: ``<topic>.dlq`` / ``<queue>-dlq``."""
        if self.dead_letter is not None:
            return self.dead_letter.place
        source = self.source_place
        suffix = ".dlq" if source.broker == "kafka" else "-dlq"
        return Place(source.broker, source.name + suffix)

    def places(self) -> list[Place]:
        """Source, dead letter and output (if any)."""
        return [self.source_place, self.dead_letter_place, *filter(None, [self.output_place])]

    def group(self, topic_prefix: str) -> str:
        """The consumer group its replicas share (a Kafka source)."""
        kafka = self.source.kafka
        group = kafka.group if kafka is not None else None
        return group or f"{topic_prefix}trigger.{self.name}"

    def rules(self) -> TriggerRules:
        return TriggerRules(
            name=self.name,
            tool=self.tool,
            max_in_flight=self.max_in_flight,
            output_format=self.output.format if self.output else "envelope",
            tool_errors=self.tool_errors,
            ordered=self.ordered,
            max_attempts=self.retry.max_attempts,
            backoff_s=self.retry.backoff_s,
            max_backoff_s=self.retry.max_backoff_s,
        )


def trigger_problem(
    triggers: Sequence[TriggerConfig],
    *,
    has_kafka: bool,
    has_sqs: bool = False,
    region_label: str | None = None,
    regions: Collection[str] = (),
) -> tuple[str, str] | None:
    """The first whole-section problem, as (field path, why); None when there is none.

    ``region_label`` / ``regions``: ``router.regions``'s label and the regions its pools
    carry (a trigger labelled with another region could never be served).
    """
    names = [t.name for t in triggers]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        return "triggers", f"trigger names must be unique; repeated: {', '.join(repeated)}"
    configured = {"kafka": has_kafka, "sqs": has_sqs}
    for i, trigger in enumerate(triggers):
        given = [("source", trigger.source_place), ("output", trigger.output_place)]
        given.append(("dead_letter", trigger.dead_letter_place))
        for field, place in given:
            if place is not None and not configured[place.broker]:
                return f"triggers[{i}].{field}.{place.broker}", _NEEDS[place.broker]
        source, output = trigger.source_place, trigger.output_place
        if output == source:
            return f"triggers[{i}].output", "the source itself: the trigger would read its results"
        if trigger.dead_letter_place in (source, output):
            return f"triggers[{i}].dead_letter", "must differ from the source and from output"
        region = trigger.labels.get(region_label) if region_label else None
        if region is not None and region not in regions:
            shown = ", ".join(sorted(regions)) or "none"
            return (
                f"triggers[{i}].labels.{region_label}",
                f"no pool carries region {region!r} (pools' regions: {shown})",
            )
    return None


_NEEDS = {
    "kafka": "a Kafka topic needs the bus's kafka section (bootstrap, security)",
    "sqs": "an SQS queue needs the bus's sqs section (region, endpoint_url)",
}
