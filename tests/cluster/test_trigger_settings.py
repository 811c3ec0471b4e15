"""The triggers section: one line per problem, naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.config import BusConfig, ConfigError, parse_config

POOL = {"name": "kit", "server": "cluster.examples.testkit:server"}
KAFKA = {"bootstrap": "127.0.0.1:9092"}


def trigger(**extra: Any) -> dict[str, Any]:
    return {
        "name": "score-orders",
        "source": {"kafka": {"topic": "orders"}},
        "tool": "echo",
        "arguments": {"text": "${value.id}"},
        **extra,
    }


def config(*triggers: dict[str, Any], **extra: Any) -> BusConfig:
    data = {"name": "b", "pools": [POOL], "kafka": KAFKA, "triggers": list(triggers), **extra}
    return parse_config(data, "bus.yaml")


def problems(*triggers: dict[str, Any], **extra: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(*triggers, **extra)
    return caught.value.problems


def test_a_trigger_gets_defaults_a_user_would_expect() -> None:
    (t,) = config(trigger()).triggers
    assert t.source.kafka is not None
    assert t.source.kafka.start == "latest"
    assert str(t.dead_letter_place) == "kafka:orders.dlq"
    assert t.output_place is None
    assert t.group("b.") == "b.trigger.score-orders"
    assert (t.max_in_flight, t.tool_errors, t.replicas) == (16, "dead_letter", 1)
    assert t.rules().max_attempts == 5


def test_a_bus_without_triggers_is_unchanged() -> None:
    assert parse_config({"pools": [POOL]}).triggers == []


@pytest.mark.parametrize(
    ("triggers", "extra", "expected"),
    [
        ([trigger(name="Score")], {}, "triggers[0].name: trigger name 'Score' must match"),
        ([trigger(), trigger()], {}, "triggers: trigger names must be unique; repeated: score"),
        (
            [trigger()],
            {"kafka": None},
            "triggers[0].source.kafka: a Kafka topic needs the bus's kafka section",
        ),
        (
            [trigger(map="pkg.mod:f")],
            {},
            "triggers[0]: give exactly one of arguments (a template) or map (a callable)",
        ),
        ([trigger(arguments=None)], {}, "triggers[0]: give exactly one of arguments"),
        (
            [trigger(arguments={"a": {"b": "${value.}"}})],
            {},
            "triggers[0].arguments: a.b: '${value.}' is not a path",
        ),
        (
            [trigger(arguments=None, map="not a path")],
            {},
            "triggers[0].map: 'not a path' must look like 'package.module:callable'",
        ),
        (
            [trigger(output={"kafka": {"topic": "orders"}})],
            {},
            "triggers[0].output: the source itself",
        ),
        (
            [trigger(dead_letter={"kafka": {"topic": "orders"}})],
            {},
            "triggers[0].dead_letter: must differ from the source and from output",
        ),
        (
            [trigger(source={"kafka": {"topic": "bad topic"}})],
            {},
            "triggers[0].source.kafka.topic: topic 'bad topic' must be 1 to 249",
        ),
        ([trigger(max_in_flight=0)], {}, "triggers[0].max_in_flight: Input should be greater"),
        ([trigger(labels={"Region!": "eu"})], {}, "triggers[0].labels: label key 'Region!'"),
    ],
)
def test_each_problem_is_one_line_naming_the_field(
    triggers: list[dict[str, Any]], extra: dict[str, Any], expected: str
) -> None:
    found = problems(*triggers, **extra)
    assert len(found) == 1
    assert found[0].startswith(expected), found[0]


def test_sqs_queues_are_sources_and_sinks_beside_kafka_topics() -> None:
    sqs = {"endpoint_url": "http://127.0.0.1:4566"}
    (t,) = config(
        trigger(
            source={"sqs": {"queue": "orders"}},
            output={"kafka": {"topic": "scores"}},
            dead_letter={"sqs": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/bad"}},
        ),
        sqs=sqs,
    ).triggers
    assert [str(p) for p in t.places()] == ["sqs:orders", "sqs:bad", "kafka:scores"]
    assert t.dead_letter_place.url == "https://sqs.eu-west-1.amazonaws.com/1/bad"
    (default,) = config(trigger(source={"sqs": {"queue": "orders"}}), sqs=sqs).triggers
    assert str(default.dead_letter_place) == "sqs:orders-dlq"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"source": {"sqs": {"queue": "orders"}}},
            "triggers[0].source.sqs: an SQS queue needs the bus's sqs section",
        ),
        (
            {"source": {"kafka": {"topic": "a"}, "sqs": {"queue": "b"}}},
            "triggers[0].source: give exactly one of kafka or sqs",
        ),
        (
            {"output": {"sqs": {"queue": "a.fifo"}}},
            "triggers[0].output.sqs.queue: queue 'a.fifo' must be 1 to 80",
        ),
        (
            {"output": {"sqs": {"queue": "a", "queue_url": "https://h/1/a"}}},
            "triggers[0].output.sqs: give exactly one of queue or queue_url",
        ),
    ],
)
def test_sqs_problems_name_the_field(extra: dict[str, Any], expected: str) -> None:
    found = problems(trigger(**extra))
    assert len(found) == 1
    assert found[0].startswith(expected), found[0]


def test_a_trigger_of_a_region_no_pool_serves_is_refused() -> None:
    pools = [{**POOL, "labels": {"region": "eu"}}]
    found = problems(
        trigger(labels={"region": "ap"}), pools=pools, router={"regions": {"label": "region"}}
    )
    assert found == ["triggers[0].labels.region: no pool carries region 'ap' (pools' regions: eu)"]


def test_status_shows_each_trigger_with_its_lag_rate_and_dead_letters() -> None:
    from cluster.cli.status import format_status

    row = {
        "source": "kafka:orders",
        "tool": "score_order",
        "lag": 1234,
        "rate_per_s": 41.5,
        "in_flight": 16,
        "max_in_flight": 16,
        "dead_lettered": 3,
        "state": "running",
        "last_error": "orders/0/7 (mapping): the record has no value.id",
    }
    waiting = {**row, "lag": None, "lag_error": "kafka lag query failed", "last_error": None}
    status = {"bus": "demo", "pools": {}, "workers": [], "triggers": {"score": row, "w": waiting}}
    lines = format_status(status).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("trigger "))
    assert lines[header].split() == [
        "trigger", "source", "tool", "lag", "rate/s", "in", "flight", "dlq", "state"
    ]  # fmt: skip
    assert lines[header + 1].split() == [
        "score", "kafka:orders", "score_order", "1234", "41.5", "16/16", "3", "running"
    ]  # fmt: skip
    assert lines[header + 2].split()[3] == "?"
    assert "  score: last error: orders/0/7 (mapping): the record has no value.id" in lines
    assert "  w: lag not read: kafka lag query failed" in lines


def test_a_status_row_sums_the_replicas_and_names_one_that_does_not_answer() -> None:
    from cluster.triggers.launch import trigger_row

    (t,) = config(trigger(replicas=3)).triggers
    first: dict[str, Any] = {"consumed": 5, "ok": 4, "dead_lettered": 1, "in_flight": 2}
    first |= {"max_in_flight": 16}
    first |= {"rate_per_s": 1.5, "lag": 7, "lag_age_s": 0.4, "state": "running"}
    second: dict[str, Any] = {"consumed": 3, "ok": 3, "in_flight": 1, "max_in_flight": 16}
    second |= {"rate_per_s": 0.5}
    second |= {"lag": None, "state": "stalled", "last_error": "output write failing"}
    row = trigger_row(t, [first, second, None])
    assert (row["consumed"], row["ok"], row["dead_lettered"]) == (8, 7, 1)
    assert (row["in_flight"], row["max_in_flight"], row["rate_per_s"]) == (3, 32, 2.0)
    assert (row["lag"], row["replicas"], row["answering"]) == (7, 3, 2)  # lag: replica 0's
    assert row["state"] == "not answering"
    assert row["last_error"] == "output write failing"
    assert trigger_row(t, [first, second, second])["state"] == "stalled"
    assert (row["source"], row["dead_letter"]) == ("kafka:orders", "kafka:orders.dlq")
