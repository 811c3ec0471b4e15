"""Reading a Prometheus text page back, for tests: series by name and labels."""

from __future__ import annotations

from dataclasses import dataclass, field

Series = dict[str, str]


@dataclass
class Page:
    """The samples of one page, plus each family's ``# TYPE``."""

    samples: list[tuple[str, Series, float]] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample of ``name`` whose labels include ``labels`` (None if none)."""
        found = [v for n, s, v in self.samples if n == name and labels.items() <= s.items()]
        assert len(found) <= 1, f"{name} {labels} matches {len(found)} samples"
        return found[0] if found else None

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of ``name`` whose labels include ``labels``."""
        return sum(v for n, s, v in self.samples if n == name and labels.items() <= s.items())

    def series(self, name: str) -> list[Series]:
        return [s for n, s, _ in self.samples if n == name]


def parse(text: str) -> Page:
    page = Page()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            page.types[name] = kind
        elif line and not line.startswith("#"):
            name, labels, rest = _split(line)
            page.samples.append((name, labels, float(rest)))
    return page


def _split(line: str) -> tuple[str, Series, str]:
    brace = line.find("{")
    if brace < 0:
        name, _, number = line.partition(" ")
        return name, {}, number
    labels: Series = {}
    i = brace + 1
    while line[i] != "}":
        equals = line.index("=", i)
        key = line[i:equals].lstrip(",")
        i = equals + 2  # past ="
        value: list[str] = []
        while line[i] != '"':
            if line[i] == "\\":
                i += 1
                value.append({"n": "\n"}.get(line[i], line[i]))
            else:
                value.append(line[i])
            i += 1
        labels[key] = "".join(value)
        i += 1
        if line[i] == ",":
            i += 1
    return line[:brace], labels, line[i + 1 :].strip()
