"""``padless.runtime.timing``: candidates run in alternating turns, warm-ups untimed."""

from __future__ import annotations

from padless.runtime.timing import alternating_times, speedup


def _logging(log: list[str], *names: str) -> dict[str, object]:
    return {name: (lambda name=name: log.append(name)) for name in names}


def test_candidates_take_turns_after_untimed_warm_up_rounds() -> None:
    log: list[str] = []
    times = alternating_times(_logging(log, "a", "b", "c"), rounds=3, warmup=2)
    assert log == ["a", "b", "c"] * 5  # 2 warm-up rounds, then 3 timed
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_rotation_moves_the_first_one_each_round() -> None:
    log: list[str] = []
    alternating_times(_logging(log, "a", "b", "c"), rounds=2, warmup=1, rotate=True)
    assert log == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_a_spent_budget_ends_the_rounds_after_one_timed_round() -> None:
    log: list[str] = []
    times = alternating_times(_logging(log, "a", "b"), rounds=50, warmup=1, budget=0.0)
    assert log == ["a", "b", "a", "b"] and len(times["a"]) == 1


def test_speedup_is_the_ratio_of_the_medians(monkeypatch) -> None:
    fake = {"baseline": [3.0, 1.0, 2.0], "candidate": [0.5, 1.0, 0.5]}
    monkeypatch.setattr("padless.runtime.timing.alternating_times",
                        lambda candidates, **_: fake)
    assert speedup(lambda: None, lambda: None, budget=1.0, rounds=3) == 4.0
