"""The driver's view of training progress: a bar on a terminal, a line every few steps in a job log."""

from __future__ import annotations

import io
import multiprocessing
import time

import pytest

from gazerm.train import progress
from gazerm.train.progress import LINE_EVERY, ProgressView, eval_event, note_event, step_event


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_job_log_gets_a_line_at_the_first_every_tenth_and_the_last_step_with_an_eta():
    out = io.StringIO()
    view = ProgressView(total_steps=25, out=out)
    view.show(note_event("resumed at step 0 (epoch 0)"))
    for step in range(1, 26):
        view.show(step_event(step, loss=1 / step, tokens_per_s=1234.4, steps_per_s=0.5))
        if step == 20:
            view.show(eval_event(step, {"val/accuracy": 0.87654, "val/loss": 0.3}))
    view.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "[gazerm] resumed at step 0 (epoch 0)",
        "[gazerm] step 1/25 loss 1.0000 (1234 tokens/s, ETA 48 s)",
        f"[gazerm] step {LINE_EVERY}/25 loss 0.1000 (1234 tokens/s, ETA 30 s)",
        "[gazerm] step 20/25 loss 0.0500 (1234 tokens/s, ETA 10 s)",
        "[gazerm] eval at step 20: {'val/accuracy': 0.8765, 'val/loss': 0.3}",
        "[gazerm] step 25/25 loss 0.0400 (1234 tokens/s, ETA 0 s)",
    ]


def test_a_terminal_gets_a_bar_that_follows_the_steps_and_keeps_notes_above_it():
    out = Terminal()
    view = ProgressView(total_steps=8, out=out)
    view.show(step_event(3, loss=0.25, tokens_per_s=99.0, steps_per_s=1.0))  # a resumed run starts late
    view.show(eval_event(3, {"val/accuracy": 0.5}))
    assert view.bar.n == 3 and view.bar.postfix == "loss=0.2500, tokens_s=99"
    view.show(step_event(8, loss=0.125, tokens_per_s=99.0, steps_per_s=1.0))
    assert view.bar.n == 8
    view.close()
    text = out.getvalue()
    assert "[gazerm] eval at step 3: {'val/accuracy': 0.5}\n" in text and "8/8" in text
    assert "[gazerm] step" not in text  # the bar replaces the lines


@pytest.mark.slow
def test_events_posted_to_the_board_reach_the_driver_and_a_silent_start_is_explained(ray_local, monkeypatch):
    monkeypatch.setattr(progress, "QUIET_START_S", 0.0)  # said after the first poll that hears nothing
    out = io.StringIO()
    with progress.follow(total_steps=2, out=out) as board:
        deadline = time.monotonic() + 60
        while progress.WAITING not in out.getvalue():  # nothing posted: the workers may wait for resources
            assert time.monotonic() < deadline, "no word on the silent start"
            time.sleep(0.05)
        board.post(step_event(1, loss=0.5, tokens_per_s=10.0, steps_per_s=1.0))
        board.post(eval_event(2, {"val/accuracy": 0.75}))
    lines = out.getvalue().splitlines()
    assert lines == [
        f"[gazerm] {progress.WAITING}",
        "[gazerm] step 1/2 loss 0.5000 (10 tokens/s, ETA 1 s)",
        "[gazerm] eval at step 2: {'val/accuracy': 0.75}",
    ]


def _post_from_a_process(board: progress.Board) -> None:
    board.post(step_event(2, loss=0.25, tokens_per_s=20.0, steps_per_s=1.0))


def test_the_local_launchers_board_carries_a_spawned_process_events_to_the_driver():
    """Under ``run.launcher: local`` rank 0 is a process the launcher spawned: its events reach the
    driver's console through the board's file."""
    out = io.StringIO()
    with progress.follow(total_steps=2, out=out, local=True) as board:
        worker = multiprocessing.get_context("spawn").Process(target=_post_from_a_process, args=(board,))
        worker.start()
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert out.getvalue().splitlines() == ["[gazerm] step 2/2 loss 0.2500 (20 tokens/s, ETA 0 s)"]
    assert not board.path.exists()  # removed with the run


def test_a_line_a_killed_rank_cut_short_is_passed_over_and_the_next_events_are_whole():
    board = progress.FileBoard()
    board.post(note_event("started"))
    with board.path.open("a") as events:
        events.write('\n{"kind": "note", "mess')  # a writer killed mid-line
    assert board.drain() == [note_event("started")]
    assert board.drain() == []
    board.post(note_event("resumed"))  # the restarted rank 0
    assert board.drain() == [note_event("resumed")]
    board.close()
