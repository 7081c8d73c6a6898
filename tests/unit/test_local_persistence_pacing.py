"""The local stack's snapshots pickle its whole state, so their cost grows with it: the interval stretches
to keep snapshotting under a tenth of the time, and never shrinks below the configured one."""

from __future__ import annotations

from modelshield.local.persistence import MAX_SHARE, next_wait


def test_a_quick_snapshot_keeps_the_configured_interval() -> None:
    # Given snapshots every 5 s that take 0.1 s, Then the next one is 5 s away
    assert next_wait(5.0, 0.1) == 5.0


def test_a_slow_snapshot_stretches_the_interval_to_a_tenth_of_the_time() -> None:
    # Given a snapshot of a large state that took 1.5 s
    took = 1.5

    # When the next one is scheduled
    wait = next_wait(5.0, took)

    # Then snapshotting takes at most a tenth of the time: 13.5 s of work between 1.5 s snapshots
    assert wait == 13.5
    assert took / (took + wait) <= MAX_SHARE + 1e-9
