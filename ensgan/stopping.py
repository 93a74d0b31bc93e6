"""Stopping a run part-way, resumable: on SIGTERM or SIGINT (Ctrl-C), or when what it runs
under is gone.

A stop is a flag. A training loop checks it before each step and, once set, saves a
checkpoint and raises StopRequested, so the next run resumes from the step reached. Outside
a training loop the signal raises StopRequested at once: every write is safe to interrupt
(ensgan/io/files.py). A member process reads its parent's flag through a shared event
(children.py), so a stop reaches every member without signalling processes that may be idle.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

from ensgan.errors import StopRequested

_flag = threading.Event()
_why: list[str] = []  # the first reason given
_shared: Any = None  # this process's event for the member processes it starts
_inherited: Any = None  # in a member process: its parent's event
_loops = {"main": 0, "all": 0}  # training loops running: in the main thread, in any thread
_counting = threading.Lock()
settled = threading.Event()  # a loop stopped and saved its checkpoint


def request(why: str) -> None:
    """Ask every training loop of this run, here and in its member processes, to stop."""
    if not _why:
        _why.append(why)
    _flag.set()
    if _shared is not None:
        _shared.set()


def clear() -> None:
    """Forget an earlier stop: for a process that runs one run's tasks after another's (a Ray
    worker is reused across tasks)."""
    _why.clear()
    _flag.clear()
    settled.clear()
    if _shared is not None:  # else the next run's member processes inherit this stop
        _shared.clear()


def requested() -> bool:
    """Whether this run was asked to stop (here, or in the parent of this member process)."""
    return _flag.is_set() or (_inherited is not None and _inherited.is_set())


def reason() -> str:
    if _why:
        return _why[0]
    return "the process that started this one asked it to stop" if requested() else ""


def stopped(what: str) -> StopRequested:
    """The exception a stop raises, saying why and what the next run does."""
    return StopRequested(f"{what} ({reason()}); the next run resumes from the checkpoints")


def shared_event() -> Any:
    """The event member processes inherit (children.py); set when this run is asked to stop."""
    global _shared
    if _shared is None:
        _shared = get_context("spawn").Event()
        if _flag.is_set():
            _shared.set()
    return _shared


def inherit(event: Any) -> None:
    """In a member process: stop when the parent that passed `event` asks."""
    global _inherited
    _inherited = event


def looping() -> bool:
    """Whether a training loop is running in this process (it stops at its next step)."""
    return _loops["all"] > 0


def exit_status() -> int:
    """The status a stopped process exits with, as a shell reports the signal that stopped
    it: 130 for SIGINT, 143 for SIGTERM and for every other reason to stop."""
    signum = signal.SIGINT if _why[:1] == ["SIGINT"] else signal.SIGTERM
    return 128 + int(signum)


def on_signal(signum: int, frame: object) -> None:
    """The SIGTERM and SIGINT handler: set the flag; raise at once unless the main thread is in a
    training loop, which checkpoints and raises at its next step."""
    request(signal.Signals(signum).name)
    if _loops["main"] == 0:
        raise stopped("stopped")


@contextmanager
def checked() -> Iterator[None]:
    """Around a training loop that checks `requested()` before each step itself: the signal
    then only sets the flag, and the stop the loop raises marks its checkpoint saved."""
    main = threading.current_thread() is threading.main_thread()
    _count(1, main)
    try:
        yield
    except StopRequested:
        settled.set()
        raise
    finally:
        _count(-1, main)


def _count(n: int, main: bool) -> None:
    with _counting:
        _loops["all"] += n
        _loops["main"] += n * main


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def on_stop_signals() -> Iterator[None]:
    """SIGTERM and SIGINT stop what runs inside (the CLI's commands) within a step,
    resumable: Ctrl-C loses no steps either. Only the main thread can set a handler;
    elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@contextmanager
def handlers_kept() -> Iterator[None]:
    """This process's SIGTERM and SIGINT handlers, as they were, once what runs inside has
    returned: ray.init (a Ray driver's start) sets a SIGTERM handler of its own, sys.exit
    with the signal's number, under which a SIGTERM later in the run would end it as an exit,
    not as a stop (no stop's line, not the stop's status). Only the main thread has handlers;
    elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            if handler is not None:  # None: set from outside Python, cannot be set back
                signal.signal(s, handler)


def _set_flag(signum: int, frame: object) -> None:
    request(signal.Signals(signum).name)


@contextmanager
def flag_only() -> Iterator[None]:
    """Around a wait of the main thread that looks at `requested()` itself between short
    slices: SIGTERM and SIGINT then only set the flag, whoever had set a handler before.
    For a wait inside Ray (ray.wait), which runs signal handlers in its own loop: what one
    raises there is dropped (ours) or comes out as a SystemError (Prefect's
    TerminationSignal), either way not as the stop it was. Elsewhere than the main thread
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with handlers_kept():
        for s in STOP_SIGNALS:
            signal.signal(s, _set_flag)
        yield


@contextmanager
def spreading() -> Iterator[None]:
    """An interrupt leaving this block (StopRequested, KeyboardInterrupt, Prefect's
    TerminationSignal: a BaseException that is no Exception) stops every other training loop
    of the run, so that waiting for the member processes waits for their checkpoints only."""
    try:
        yield
    except Exception:
        raise
    except BaseException as exc:
        request(_signal_name(exc))
        raise


def carried_signal(exc: BaseException) -> str | None:
    """The name of the signal an interrupt carries (Prefect's TerminationSignal, which its
    flow engine's own SIGTERM handler raises), or None."""
    signum = getattr(exc, "signal", None)
    return signal.Signals(signum).name if isinstance(signum, int) else None


def _signal_name(exc: BaseException) -> str:
    """What an interrupt stands for."""
    if carried := carried_signal(exc):
        return carried
    return "SIGINT" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
