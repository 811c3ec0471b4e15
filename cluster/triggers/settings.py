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
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actors.triggers.core import TriggerRules
from actors.triggers.template import Template, TemplateError
from transports.labels import label_problem

__all__ = [
    "DeadLetterConfig",
    "KafkaSourceConfig",
    "KafkaTopicConfig",
    "OutputConfig",
    "RetryConfig",
    "TriggerConfig",
    "TriggerSourceConfig",
    "trigger_problem",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Kafka's own rule for topic names (legal characters, at most 249 of them).
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _topic_name(value: str) -> str:
    if not _TOPIC.match(value) or value in (".", ".."):
        raise ValueError(f"topic {value!r} must be 1 to 249 of [A-Za-z0-9._-] (Kafka's rule)")
    return value


class KafkaSourceConfig(_Strict):
    topic: str
    group: str | None = Field(None, description="consumer group; default '<prefix>trigger.<name>'")
    # Kafka's own default: declaring a trigger must not replay a topic's history.
    start: Literal["latest", "earliest"] = "latest"

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _topic_name(value)


class TriggerSourceConfig(_Strict):
    kafka: KafkaSourceConfig


class KafkaTopicConfig(_Strict):
    topic: str

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _topic_name(value)


class OutputConfig(_Strict):
    kafka: KafkaTopicConfig
    # envelope: {trigger, tool, source, key, result}; result: the CallToolResult;
    # structured: its structuredContent (a result without one is dead-lettered).
    format: Literal["envelope", "result", "structured"] = "envelope"


class DeadLetterConfig(_Strict):
    kafka: KafkaTopicConfig


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
        for key, label in value.items():
            if (problem := label_problem(key, label)) is not None:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.arguments is None) == (self.map is None):
            raise ValueError("give exactly one of arguments (a template) or map (a callable)")
        if self.retry.max_backoff_s < self.retry.backoff_s:
            raise ValueError("retry.max_backoff_s must be at least retry.backoff_s")
        return self

    @property
    def source_topic(self) -> str:
        return self.source.kafka.topic

    @property
    def dead_letter_topic(self) -> str:
        return self.dead_letter.kafka.topic if self.dead_letter else f"{self.source_topic}.dlq"

    @property
    def output_topic(self) -> str | None:
        return self.output.kafka.topic if self.output else None

    def group(self, topic_prefix: str) -> str:
        """The consumer group its replicas share."""
        return self.source.kafka.group or f"{topic_prefix}trigger.{self.name}"

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
    for i, trigger in enumerate(triggers):
        if not has_kafka:
            return (
                f"triggers[{i}].source.kafka",
                "reading a Kafka topic needs the bus's kafka section (bootstrap, security)",
            )
        source = trigger.source_topic
        if trigger.output_topic == source:
            return f"triggers[{i}].output", "the source itself: the trigger would read its results"
        if trigger.dead_letter_topic in (source, trigger.output_topic):
            return f"triggers[{i}].dead_letter", "must differ from the source and from output"
        region = trigger.labels.get(region_label) if region_label else None
        if region is not None and region not in regions:
            shown = ", ".join(sorted(regions)) or "none"
            return (
                f"triggers[{i}].labels.{region_label}",
                f"no pool carries region {region!r} (pools' regions: {shown})",
            )
    return None
