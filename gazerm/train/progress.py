"""Training progress on the driver's console.

Rank 0 posts small events (a step's loss and rate, an evaluation, a note such as a resume) to a board
(a :class:`ProgressBoard` actor under Ray Train, a file under the local launcher); the driver drains it
and draws them: a progress bar with loss, tokens/s and ETA on a terminal, a line every few steps in a
job log or CI. So the console shows what the run does without the workers' own output (Ray's,
DeepSpeed's and the libraries' logs), which ``-v`` brings back.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TextIO

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

Event = dict[str, Any]
LINE_EVERY = 10  # steps between progress lines when there is no terminal to draw a bar on
POLL_S = 0.5
DRAIN_TIMEOUT_S = 10.0
QUIET_START_S = 120.0  # no event for this long after the start: say what the workers may wait for


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Events rank 0 posted and the driver has not drawn yet (posting never waits on the driver)."""

    def __init__(self) -> None:
        self._events: list[Event] = []

    def post(self, event: Event) -> None:
        self._events.append(event)

    def drain(self) -> list[Event]:
        events, self._events = self._events, []
        return events


class Board(Protocol):
    """Where rank 0 posts events and the driver drains them; picklable, so it travels to the workers."""

    def post(self, event: Event) -> None:
        """Add ``event``, without waiting for the driver."""

    def drain(self) -> list[Event]:
        """The events posted since the last drain; raises if the board cannot be reached."""

    def close(self) -> None:
        """Release it once the driver has drawn the last events."""


class ActorBoard:
    """A :class:`ProgressBoard` actor on the driver's node: a board on a worker node would die with that
    node and take the console with it."""

    def __init__(self) -> None:
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.actor = ProgressBoard.options(scheduling_strategy=here).remote()

    def post(self, event: Event) -> None:
        self.actor.post.remote(event)

    def drain(self) -> list[Event]:
        return ray.get(self.actor.drain.remote(), timeout=DRAIN_TIMEOUT_S)

    def close(self) -> None:
        ray.kill(self.actor)


class FileBoard:
    """Events as JSON lines in a file the driver reads on from where it stopped: the local launcher's
    ranks are killed and restarted as processes, and a file leaves nothing locked behind a killed writer.
    Each event is written on a line of its own after a newline, so a line a killed writer cut short ends
    there and is passed over (a progress event, not data)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="gazerm-progress-")) / "events.jsonl"
        self.path.touch()
        self._read = 0  # the driver's: bytes drained so far

    def post(self, event: Event) -> None:
        with self.path.open("a") as events:
            events.write("\n" + json.dumps(event) + "\n")  # one write: appended whole

    def drain(self) -> list[Event]:
        with self.path.open("rb") as events:
            events.seek(self._read)
            text = events.read()
        whole = text[: text.rfind(b"\n") + 1]
        self._read += len(whole)
        return [event for line in whole.splitlines() if (event := _parsed(line)) is not None]

    def close(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def _parsed(line: bytes) -> Event | None:
    try:
        return json.loads(line) if line.strip() else None
    except json.JSONDecodeError:  # cut short by a killed writer
        return None


WAITING = (
    "no word from the workers yet: they may be waiting for resources the cluster "
    "lacks (`ray status` lists pending demands) or still loading the model; `gazerm -v` shows their logs"
)


def step_event(step: int, loss: float, tokens_per_s: float, steps_per_s: float) -> Event:
    return {
        "kind": "step",
        "step": step,
        "loss": loss,
        "tokens_per_s": tokens_per_s,
        "steps_per_s": steps_per_s,
    }


def eval_event(step: int, metrics: dict[str, float]) -> Event:
    return {"kind": "eval", "step": step, "metrics": metrics}


def note_event(message: str) -> Event:
    return {"kind": "note", "message": message}


class ProgressView:
    """Draws events for a run of ``total_steps`` steps: a bar where ``out`` is a terminal, else lines."""

    def __init__(self, total_steps: int, out: TextIO | None = None) -> None:
        self.total_steps = total_steps
        self.out = out = out or sys.stdout
        self.bar = (
            tqdm(total=total_steps, desc="train", unit="step", file=out, dynamic_ncols=True)
            if out.isatty()
            else None
        )

    def show(self, event: Event) -> None:
        if event["kind"] == "step":
            self._step(event)
        elif event["kind"] == "eval":
            shown = {name: round(value, 4) for name, value in event["metrics"].items()}
            self._line(f"eval at step {event['step']}: {shown}")
        else:
            self._line(event["message"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _step(self, event: Event) -> None:
        step = event["step"]
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.4f}", tokens_s=f"{event['tokens_per_s']:.0f}")
        elif step == 1 or step % LINE_EVERY == 0 or step == self.total_steps:
            eta = (self.total_steps - step) / event["steps_per_s"] if event["steps_per_s"] > 0 else 0.0
            self._line(
                f"step {step}/{self.total_steps} loss {event['loss']:.4f} "
                f"({event['tokens_per_s']:.0f} tokens/s, ETA {eta:.0f} s)"
            )

    def _line(self, message: str) -> None:
        text = f"[gazerm] {message}"
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)


@contextmanager
def follow(total_steps: int, out: TextIO | None = None, local: bool = False) -> Iterator[Board]:
    """A board for the workers to post to (a file for the ``local`` launcher's processes, else an actor),
    drawn on ``out`` (default: stdout) while the block runs, up to its last event."""
    board: Board = FileBoard() if local else ActorBoard()
    view = ProgressView(total_steps, out)
    stop = threading.Event()

    def draw() -> bool:
        """Draw what the board holds; False when it held nothing or cannot be reached (a console that
        stops updating must not take the training job down with it)."""
        try:
            events = board.drain()
        except (ray.exceptions.RayError, TimeoutError):
            return False
        for event in events:
            view.show(event)
        return bool(events)

    def pump() -> None:
        started, heard = time.monotonic(), False
        while not stop.wait(POLL_S):
            heard = draw() or heard
            if not heard and time.monotonic() - started > QUIET_START_S:
                view.show(note_event(WAITING))
                heard = True

    thread = threading.Thread(target=pump, name="gazerm-progress", daemon=True)
    thread.start()
    try:
        yield board
    finally:
        stop.set()
        thread.join(timeout=DRAIN_TIMEOUT_S + POLL_S)
        draw()  # the last events; never raises, so an error of the block itself stays the one raised
        view.close()
        board.close()
