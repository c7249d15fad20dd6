"""Progress bars: on for a terminal or when forced, off in CI; Ignite's ProgressBar attaches to engines."""

from __future__ import annotations

import io
import sys

from ignite.engine import Engine, Events

from brainspade import progress


def test_forced_on_and_off(monkeypatch):
    monkeypatch.setenv("BRAINSPADE_PROGRESS", "1")
    assert progress.progress_enabled()
    monkeypatch.setenv("BRAINSPADE_PROGRESS", "0")
    assert not progress.progress_enabled()
    monkeypatch.delenv("BRAINSPADE_PROGRESS")
    monkeypatch.setenv("CI", "true")
    assert not progress.progress_enabled()


def test_track_yields_everything_and_draws_only_when_enabled(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("BRAINSPADE_PROGRESS", "0")
    assert list(progress.track(range(5), total=5, desc="x")) == list(range(5))
    assert err.getvalue() == ""
    monkeypatch.setenv("BRAINSPADE_PROGRESS", "1")
    assert list(progress.track(range(5), total=5, desc="gen")) == list(range(5))
    assert "gen" in err.getvalue() and "5/5" in err.getvalue()


def test_attach_progress_to_an_ignite_engine(monkeypatch):
    monkeypatch.setenv("BRAINSPADE_PROGRESS", "1")
    engine = progress.attach_progress(Engine(lambda e, b: None), desc="train")
    handlers = list(engine._event_handlers[Events.ITERATION_COMPLETED])
    assert handlers, "no progress handler attached"
    monkeypatch.setenv("BRAINSPADE_PROGRESS", "0")
    quiet = progress.attach_progress(Engine(lambda e, b: None))
    assert not quiet._event_handlers[Events.ITERATION_COMPLETED]
