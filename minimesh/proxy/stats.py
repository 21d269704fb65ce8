"""Stats with Envoy's names (`cluster.<name>.upstream_rq_total`) and their Prometheus form
(`envoy_cluster_upstream_rq_total{envoy_cluster_name="<name>"}`), plus Istio's standard metrics.

A stat is created through a `Scope` that knows the tag its prefix carries (cluster name, listener address,
HCM stat prefix), so names with dots (`outbound|9080||details.default.svc.cluster.local`) convert exactly,
without Envoy's regex tag extraction.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable

# Envoy's default histogram buckets (milliseconds).
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
           1800000, 3600000)
_RQ_CODE = re.compile(r"^(.*_rq)_(\d)xx$")
_RQ_EXACT = re.compile(r"^(.*_rq)_(\d{3})$")
_PROM_BAD = re.compile(r"[^a-zA-Z0-9_]")


class Counter:
    __slots__ = ("labels", "name", "prom", "value")

    def __init__(self, name: str, prom: str, labels: tuple[tuple[str, str], ...]) -> None:
        self.name, self.prom, self.labels, self.value = name, prom, labels, 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Gauge(Counter):
    __slots__ = ()

    def dec(self, n: int = 1) -> None:
        self.value -= n

    def set(self, v: int) -> None:
        self.value = v


class Histogram:
    __slots__ = ("counts", "labels", "name", "prom", "sum", "total")

    def __init__(self, name: str, prom: str, labels: tuple[tuple[str, str], ...]) -> None:
        self.name, self.prom, self.labels = name, prom, labels
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.total = 0

    def record(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value
        self.total += 1

    def quantile(self, q: float) -> float | None:
        """Upper bucket bound holding the q-quantile (what Envoy's /stats shows is interpolated; close enough)."""
        if not self.total:
            return None
        want, seen = q * self.total, 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= want:
                return BUCKETS[i] if i < len(BUCKETS) else float("inf")
        return float("inf")


def _prom_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _prom_name(*parts: str) -> str:
    return _PROM_BAD.sub("_", "_".join(p for p in parts if p))


class Scope:
    """Stats under one prefix, e.g. `cluster.<name>.` tagged envoy_cluster_name=<name>."""

    __slots__ = ("_store", "kind", "prefix", "tag")

    def __init__(self, store: Stats, kind: str, tag: tuple[str, str] | None, prefix: str) -> None:
        self._store, self.kind, self.tag, self.prefix = store, kind, tag, prefix

    def _names(self, stat: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        labels: list[tuple[str, str]] = []
        short = stat
        m = _RQ_CODE.match(stat)
        if m:
            short, labels = f"{m.group(1)}_xx", [("envoy_response_code_class", m.group(2))]
        else:
            m = _RQ_EXACT.match(stat)
            if m:
                short, labels = m.group(1), [("envoy_response_code", m.group(2))]
        if self.tag:
            labels.append(self.tag)
        return f"{self.prefix}{stat}", _prom_name("envoy", self.kind, short), tuple(labels)

    def counter(self, stat: str) -> Counter:
        return self._store._get(Counter, *self._names(stat))

    def gauge(self, stat: str) -> Gauge:
        return self._store._get(Gauge, *self._names(stat))

    def histogram(self, stat: str) -> Histogram:
        return self._store._get(Histogram, *self._names(stat))


class LabeledCounter:
    """A Prometheus-only counter family keyed by label values (istio_requests_total)."""

    __slots__ = ("help", "label_names", "name", "values")

    def __init__(self, name: str, label_names: tuple[str, ...], help: str) -> None:
        self.name, self.label_names, self.help = name, label_names, help
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], n: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + n


class LabeledHistogram:
    __slots__ = ("help", "label_names", "name", "values")

    def __init__(self, name: str, label_names: tuple[str, ...], help: str) -> None:
        self.name, self.label_names, self.help = name, label_names, help
        self.values: dict[tuple[str, ...], Histogram] = {}

    def record(self, labels: tuple[str, ...], value: float) -> None:
        h = self.values.get(labels)
        if h is None:
            h = self.values[labels] = Histogram(self.name, self.name, ())
        h.record(value)


class Stats:
    """All stats of one proxy process."""

    def __init__(self) -> None:
        self._all: dict[str, Counter | Gauge | Histogram] = {}
        self.families: dict[str, LabeledCounter | LabeledHistogram] = {}
        self.root = Scope(self, "", None, "")

    def scope(self, kind: str, name: str | None = None, tag: str | None = None) -> Scope:
        """`scope("cluster", "foo", "envoy_cluster_name")` -> stats named `cluster.foo.<stat>`."""
        if name is None:
            return Scope(self, kind, None, f"{kind}.")
        return Scope(self, kind, (tag, name) if tag else None, f"{kind}.{name}.")

    def _get(self, cls: type, name: str, prom: str, labels: tuple[tuple[str, str], ...]):
        s = self._all.get(name)
        if s is None:
            s = self._all[name] = cls(name, prom, labels)
        elif not isinstance(s, cls):
            raise TypeError(f"stat {name} exists as {type(s).__name__}")
        return s

    def family(self, cls: type, name: str, label_names: tuple[str, ...], help: str):
        f = self.families.get(name)
        if f is None:
            f = self.families[name] = cls(name, label_names, help)
        return f

    def get(self, name: str) -> int | None:
        s = self._all.get(name)
        return None if s is None or isinstance(s, Histogram) else s.value

    def reset_counters(self) -> None:
        for s in self._all.values():
            if type(s) is Counter:
                s.value = 0

    # rendering -----------------------------------------------------------------------------------
    def _sorted(self, filter_re: str | None = None) -> Iterable[Counter | Gauge | Histogram]:
        rx = re.compile(filter_re) if filter_re else None
        for name in sorted(self._all):
            if rx is None or rx.search(name):
                yield self._all[name]

    def render_text(self, filter_re: str | None = None, used_only: bool = False) -> str:
        lines = []
        for s in self._sorted(filter_re):
            if isinstance(s, Histogram):
                if s.total or not used_only:
                    qs = ", ".join(f"P{int(q * 100)}({s.quantile(q) if s.total else 'nan'})"
                                   for q in (0.5, 0.9, 0.99))
                    lines.append(f"{s.name}: {qs} count={s.total} sum={s.sum:g}")
            elif s.value or not used_only:
                lines.append(f"{s.name}: {s.value}")
        return "\n".join(lines) + "\n"

    def render_json(self, filter_re: str | None = None) -> str:
        stats: list[dict[str, object]] = []
        hists = []
        for s in self._sorted(filter_re):
            if isinstance(s, Histogram):
                hists.append({"name": s.name, "count": s.total, "sum": s.sum,
                              "quantiles": {f"P{int(q * 100)}": s.quantile(q) for q in (0.5, 0.9, 0.99)}})
            else:
                stats.append({"name": s.name, "value": s.value})
        if hists:
            stats.append({"histograms": hists})
        return json.dumps({"stats": stats}, indent=1)

    def render_prometheus(self) -> str:
        by_prom: dict[str, list[Counter | Gauge | Histogram]] = {}
        for s in self._all.values():
            by_prom.setdefault(s.prom, []).append(s)
        out: list[str] = []
        for prom in sorted(by_prom):
            group = by_prom[prom]
            first = group[0]
            kind = "histogram" if isinstance(first, Histogram) else "gauge" if isinstance(first, Gauge) else "counter"
            out.append(f"# TYPE {prom} {kind}")
            for s in sorted(group, key=lambda x: x.labels):
                if isinstance(s, Histogram):
                    out.extend(_prom_histogram(prom, s.labels, s))
                else:
                    out.append(f"{prom}{_labels(s.labels)} {s.value}")
        for name in sorted(self.families):
            fam = self.families[name]
            kind = "histogram" if isinstance(fam, LabeledHistogram) else "counter"
            out.append(f"# HELP {name} {fam.help}")
            out.append(f"# TYPE {name} {kind}")
            for values, v in sorted(fam.values.items()):
                labels = tuple(zip(fam.label_names, values, strict=True))
                if isinstance(v, Histogram):
                    out.extend(_prom_histogram(name, labels, v))
                else:
                    out.append(f"{name}{_labels(labels)} {v:g}")
        return "\n".join(out) + "\n"


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_prom_escape(v)}"' for k, v in labels)
    return f"{{{inner}}}" if inner else ""


def _prom_histogram(name: str, labels: tuple[tuple[str, str], ...], h: Histogram) -> list[str]:
    lines, cumulative = [], 0
    for bound, c in zip((*BUCKETS, "+Inf"), h.counts, strict=True):
        cumulative += c
        le = bound if isinstance(bound, str) else f"{bound:g}"
        lines.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {cumulative}")
    lines.append(f"{name}_sum{_labels(labels)} {h.sum:g}")
    lines.append(f"{name}_count{_labels(labels)} {h.total}")
    return lines
