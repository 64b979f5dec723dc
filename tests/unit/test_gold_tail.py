"""When a stream run may leave the marts after P1 to the next: only while they lag for less than
the bound, counted from the first run that left them."""

from types import SimpleNamespace

from cpa_assets.gold import tail

NOW = 1_000_000.0


class Runs:
    """The run records a Dagster instance would give: run id → start time."""

    def __init__(self, **started):
        self.started = started

    def get_run_record_by_id(self, run_id):
        return SimpleNamespace(start_time=self.started[run_id]) if run_id in self.started else None


def test_a_first_run_may_leave_them_and_the_next_ones_until_the_bound(monkeypatch):
    monkeypatch.setattr(tail, "MAX_TAIL_LAG_SECONDS", 90.0)
    runs = Runs(r1=NOW - 60, r2=NOW - 40)
    assert tail.lag_allowed(runs, [], NOW)
    assert tail.lag_allowed(runs, ["r1", "r2"], NOW)
    # Counted from the first run that left them, not the latest.
    assert not tail.lag_allowed(runs, ["r1", "r2"], NOW + 31)
    # A run the instance no longer knows: write them now.
    assert not tail.lag_allowed(runs, ["gone"], NOW)


def test_zero_never_leaves_them_and_the_chain_stays_short(monkeypatch):
    monkeypatch.setattr(tail, "MAX_TAIL_LAG_SECONDS", 0.0)
    assert not tail.lag_allowed(Runs(), [], NOW)
    monkeypatch.setattr(tail, "MAX_TAIL_LAG_SECONDS", 1e9)
    many = [f"r{n}" for n in range(tail.MAX_DEFERRED_RUNS)]
    assert not tail.lag_allowed(Runs(**{r: NOW for r in many}), many, NOW)
