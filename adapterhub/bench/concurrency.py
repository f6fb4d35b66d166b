"""Concurrent trainings: two of our trainings at once on the CPU, before and after CPU seats.

Three legs, each training of the recipe (the shipped finance recipe unless told
otherwise) in its own child process, on the CPU whatever the bench's device (the
question is how processes share the cores):

- ``alone``: one training with adapterhub's default thread choice;
- ``before``: two trainings started together, each on torch's own default thread
  count (all the cores: what every process did before seats, oversubscribing them);
- ``after``: two trainings started together with adapterhub's default: each takes a
  seat (:mod:`adapterhub.cpu`) and its share of the cores.

The user's thread settings (``ADAPTERHUB_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``)
are removed from the children's environment and the bench's ``threads`` does not apply:
each leg sets its own policy. The processes of a leg wait for each other twice: after
taking their seats (so each counts the other when it chooses its threads, as rebalancing
would make it a few seconds later) and after the warm-up (so their timed steps run together). The
bench process gives its own seat up meanwhile, and before a leg whose threads adapterhub
chooses it waits (at most ``concurrency_settle_s``) until the 1-minute load average no
longer counts the work that just ended. Each process reports tokens/s over its own
timed steps; a leg's aggregate is all its tokens over the time from the first timed
step to the last.

>>> result = measure_concurrency(config, base_name="smollm2-135m-instruct", skipped=[])  # doctest: +SKIP
>>> result["after_over_before"] >= 1  # doctest: +SKIP
True
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .. import cpu
from .config import BenchConfig
from .isolated import IsolatedRunError, run_together
from .training import DEFAULT_RECIPE, default_recipe, recipe_overrides

TORCH, SEATS = "torch default", "adapterhub seats"  # the thread policies
LEGS = {"alone": (1, SEATS), "before": (2, TORCH), "after": (2, SEATS)}  # leg: (processes, policy), report order
RUN_ORDER = ("alone", "after", "before")  # "before" last: its threads ignore the load it leaves behind
MEET_TIMEOUT_S = 600.0  # a process that never arrives has failed; its parent stops the others long before


def measure_concurrency(config: BenchConfig, *, base_name: str, skipped: list[dict[str, str]]) -> dict[str, Any]:
    """Train alone, then twice at once before and after seats; compare tokens/s.

    Args:
        config: the run's configuration (steps, warm-up, batch size, recipe, settle time).
        base_name: the base every training uses.
        skipped: gets a record for every leg that could not run (and why).

    Returns:
        ``{"recipe", "steps", "warmup", "batch_size", "device", "usable_cores", "legs", "after_over_before"}``;
        each leg has ``policy``, ``load_average`` (1-minute, when it started), ``processes`` (each with
        ``tokens_per_s``, ``threads`` at the start and ``threads_end``, ``torch_default``, ``seat``, ``sharers``
        and, in the concurrent legs, ``slowdown_vs_alone``), the aggregate ``tokens_per_s`` and ``overlap``
        (the share of the leg's span all its processes were timed together); a leg that failed is absent.
    """
    recipe = config.train_recipe or default_recipe()
    if recipe is None:
        skipped.append({"area": "concurrency", "case": "all", "reason": f"no recipe: {DEFAULT_RECIPE} is not in "
                        "this checkout; pass train_recipe= (or run from the adapterhub project folder)"})
        return {}
    settings = {"recipe": str(recipe), "overrides": recipe_overrides(config, base_name=base_name, device="cpu"),
                "steps": config.train_steps, "warmup": min(config.warmup, 2)}
    legs: dict[str, dict[str, Any]] = {}
    with cpu.seat_released():  # this process only waits: its seat would shrink the children's share
        for leg in RUN_ORDER:
            processes, policy = LEGS[leg]
            if policy == SEATS:
                _settle(config.concurrency_settle_s)
            load = _load_average()
            try:
                measured = _run_leg(settings, processes=processes, policy=policy)
            except IsolatedRunError as error:
                skipped.append({"area": "concurrency", "case": leg, "reason": str(error)})
                continue
            legs[leg] = {"policy": policy, "load_average": load, **summarize(measured)}
    legs = {leg: legs[leg] for leg in LEGS if leg in legs}
    result: dict[str, Any] = {"recipe": str(recipe), "steps": config.train_steps, "warmup": settings["warmup"],
                              "batch_size": config.train_batch, "device": "cpu", "usable_cores": cpu.usable_cores(),
                              "legs": legs}
    if "alone" in legs:
        alone = legs["alone"]["tokens_per_s"]
        for leg in ("before", "after"):
            for process in legs.get(leg, {}).get("processes", []):
                process["slowdown_vs_alone"] = alone / process["tokens_per_s"]
    if "before" in legs and "after" in legs:
        result["after_over_before"] = legs["after"]["tokens_per_s"] / legs["before"]["tokens_per_s"]
    return result


def summarize(processes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A leg's aggregate from its processes' timed windows (``start``, ``end``, ``tokens``).

    Returns:
        ``{"processes", "tokens_per_s", "overlap"}``: all tokens ÷ (last end − first start), and
        the share of that span during which every process was in its timed steps.
    """
    span = max(p["end"] for p in processes) - min(p["start"] for p in processes)
    together = min(p["end"] for p in processes) - max(p["start"] for p in processes)
    return {"processes": list(processes), "tokens_per_s": sum(p["tokens"] for p in processes) / span,
            "overlap": max(0.0, together) / span}


def _run_leg(settings: dict[str, Any], *, processes: int, policy: str) -> list[dict[str, Any]]:
    """Run ``processes`` trainings at once under ``policy``; each one's result."""
    with tempfile.TemporaryDirectory(prefix="adapterhub-bench-meet-") as meeting:
        call = ("adapterhub.bench.concurrency:train_in_leg",
                {**settings, "policy": policy, "meeting": meeting, "peers": processes})
        return run_together([call] * processes, env=_child_environment())


def _child_environment() -> dict[str, str]:
    """This process's environment without the user's thread settings: each leg sets its own policy."""
    return {name: value for name, value in os.environ.items() if name not in cpu.USER_SETTINGS}


def _settle(limit_s: float) -> None:
    """Wait, at most ``limit_s``, until adapterhub counts every core idle again (the 1-minute load
    average still counts the work that just ended, and would shrink the next processes' choice)."""
    deadline = time.monotonic() + limit_s
    while cpu.idle_cores() < cpu.usable_cores() and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return None


def meet(folder: str, stage: str, peers: int, *, timeout: float = MEET_TIMEOUT_S) -> None:
    """Wait until ``peers`` processes (this one included) have reached ``stage``; each leaves a file in ``folder``.

    Raises:
        TimeoutError: the others did not arrive within ``timeout`` seconds.
    """
    Path(folder, f"{stage}-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while (arrived := len(list(Path(folder).glob(f"{stage}-*")))) < peers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{arrived} of {peers} processes reached {stage!r} in {timeout:g} s")
        time.sleep(0.01)


def train_in_leg(*, recipe: str, overrides: Sequence[str], steps: int, warmup: int, policy: str, meeting: str,
                 peers: int) -> dict[str, Any]:
    """One training of a leg (child-process entry): its thread policy, then the timed steps with its peers.

    ``policy``: :data:`TORCH` leaves torch's own thread count (and takes no seat); :data:`SEATS`
    takes a seat, waits until the ``peers`` have theirs, then lets :func:`adapterhub.cpu.use_threads`
    choose (the trainer rebalances between steps, as ``adapterhub train`` does).

    Returns:
        :func:`~adapterhub.bench.training.train_with_recipe`'s result plus ``policy``, ``torch_default``,
        ``threads`` (after the policy), ``threads_end``, ``seat``, ``sharers`` (seats counted, with
        seats) and ``start`` / ``end`` of the timed steps (epoch seconds).
    """
    import torch

    from .training import train_with_recipe

    torch_default = torch.get_num_threads()  # nothing has set it yet: torch's own choice
    if policy == SEATS:
        cpu.take_seat()
        meet(meeting, "seated", peers)  # every seat is held before any process chooses
        cpu.use_threads()
    elif policy != TORCH:
        raise ValueError(f"unknown thread policy {policy!r}; choose {TORCH!r} or {SEATS!r}")
    threads, sharers = torch.get_num_threads(), (cpu.sharers() if policy == SEATS else None)
    window: dict[str, float] = {}

    def start_together() -> None:
        meet(meeting, "warm", peers)
        window["start"] = time.time()

    measured = train_with_recipe(recipe=recipe, overrides=overrides, steps=steps, warmup=warmup,
                                 before_timing=start_together)
    return {**measured, "policy": policy, "torch_default": torch_default, "threads": threads,
            "threads_end": torch.get_num_threads(), "seat": cpu.holds_seat(), "sharers": sharers,
            "start": window["start"], "end": window["start"] + measured["seconds"]}


def render(result: dict[str, Any]) -> list[str]:
    """The report section: one row per leg, then after ÷ before."""
    from .markdown import format_value, table

    legs = result.get("legs") or {}
    if not legs:
        return ["Not measured."]
    rows = [[leg, data["policy"], " + ".join(_threads(process) for process in data["processes"]),
             ", ".join(format_value(process["tokens_per_s"]) for process in data["processes"]),
             format_value(data["tokens_per_s"]),
             ", ".join(format_value(process.get("slowdown_vs_alone"), "×") for process in data["processes"]),
             f"{data['overlap']:.0%}", format_value(data["load_average"])] for leg, data in legs.items()]
    lines = [f"Our trainer on `{result['recipe']}`, batch {result['batch_size']}, {result['steps']} timed steps after "
             f"{result['warmup']} warm-up in each process, on the CPU ({result['usable_cores']} usable cores); each "
             "training in its own process, those of a leg starting their timed steps together. *alone*: one "
             "training on adapterhub's default threads; *before*: two at once, each on torch's default (all the "
             "cores, as every process did before CPU seats); *after*: two at once on adapterhub's default, each "
             "holding a seat and taking its share. Aggregate: all tokens ÷ the time from the first timed step to "
             "the last; slowdown: alone's tokens/s ÷ the process's; threads a → b: rebalanced during the steps. "
             "One run per leg, so on a shared machine the figures are noisy.", "",
             *table(["leg", "policy", "threads", "tokens/s per process", "aggregate tokens/s",
                      "slowdown vs alone", "timed together", "load average at start"], rows)]
    ratio = result.get("after_over_before")
    if ratio is not None:
        lines += [f"Two trainings at once: **{format_value(ratio, '×')}** the aggregate tokens/s with CPU seats "
                  "(after) than with torch's default threads in both (before).", ""]
    return lines


def _threads(process: dict[str, Any]) -> str:
    """``4``, or ``4 → 2`` when the process rebalanced during its steps."""
    start, end = process["threads"], process["threads_end"]
    return str(start) if start == end else f"{start} → {end}"
