"""The request tally's batched histogram update equals prometheus-client's own observe."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram

from gateway.metrics import _observe_many


def _samples(histogram: Histogram) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_observe_many_matches_observe() -> None:
    rng = random.Random(7)
    values = [rng.random() * 12 for _ in range(500)] + [0.005, 0.1, 10.0, 1e9]
    fast = Histogram("fast", "x", registry=CollectorRegistry())
    slow = Histogram("slow", "x", registry=CollectorRegistry())
    _observe_many(fast, values)
    for value in values:
        slow.observe(value)
    fast_samples = {(name[4:], labels): v for (name, labels), v in _samples(fast).items()}
    slow_samples = {(name[4:], labels): v for (name, labels), v in _samples(slow).items()}
    assert fast_samples == slow_samples


def test_observe_many_falls_back_to_the_public_api() -> None:
    seen: list[float] = []

    class Plain:
        def observe(self, value: float) -> None:
            seen.append(value)

    _observe_many(Plain(), [1.0, 2.0])  # type: ignore[arg-type]
    assert seen == [1.0, 2.0]
