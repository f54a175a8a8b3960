"""The compiled programs a served model version runs, held explicitly and let go.

jit compiles a program the first time a function meets new argument shapes and keeps it, with
its trace and lowering, for the life of the process: every capacity step of a growing catalogue
added a set of programs that was never freed (about 1 GB and 24,000 memory mappings per set of
93 here, until the process hit the kernel's 65,530 mappings and aborted). A served engine runs
through a `Programs` set instead: ahead-of-time compiled executables (`jax.stages.Compiled`)
keyed by function, static arguments and argument shapes, one set per served shape
(`ShapeKey`). Engines of one shape share their set through a `ProgramLibrary`; when none holds
it any more its executables are freed, as long as jit's own caches were emptied after compiling
(`forget_jit_caches`), which the service does after every set it prepares.

Which programs a set holds is fixed by `ServedShapes`: a few batch sizes, one narrow and one
wide score width, one profile step, one learner step (`sona_jax.serve.program_plan` lists
them). A program outside the plan still compiles on first use (counted in `unplanned`), into
the set, so it is freed with it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import jax

from sona_jax.buckets import bucket


@dataclass(frozen=True)
class ServedShapes:
    """The padded sizes a served engine compiles for, so a model version needs a known, small
    set of programs (`program_plan`).

    batch_sizes: viewers (or score rows) per engine call, ascending (a batch is padded to the
    next one; more than the largest go in several calls). The smallest size serves a viewer
    alone at the wide seen / dismissed widths (`batch.ListWidths.wide`); the larger ones use
    the model's own widths, and a viewer whose lists are longer is served alone.
    score_width: items per score row; a request with more spans several rows of its viewer.
    profile_events: stored events per step when a viewer's profile is built (one program
    whatever the viewer's history length).
    learner_users: viewers per adapter-training call of the learner.
    """

    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
    score_width: int = 8
    profile_events: int = 512
    learner_users: int = 16

    def __post_init__(self):
        sizes = tuple(self.batch_sizes)
        if not sizes or list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
            raise ValueError(f"batch_sizes: distinct ascending sizes >= 1, got {sizes}")
        if self.score_width < 1:
            raise ValueError("score_width: at least 1")
        object.__setattr__(self, "batch_sizes", sizes)

    @property
    def largest(self) -> int:
        return self.batch_sizes[-1]

    @property
    def alone(self) -> int:
        """The batch size of a viewer served alone (wide lists, a wide score request)."""
        return self.batch_sizes[0]

    def padded(self, n: int) -> int:
        """Rows a batch of ``n`` (at most `largest`) viewers is padded to."""
        return bucket(n, self.batch_sizes)

    def chunks(self, n: int) -> list[range]:
        """``range(n)`` cut into batches of at most `largest` viewers."""
        return [range(s, min(s + self.largest, n)) for s in range(0, n, self.largest)]


def function_name(fn: Callable) -> str:
    """A stable name of a (jitted) function: module and qualified name."""
    return f"{fn.__module__}.{fn.__qualname__}"


def signature(tree: Any) -> tuple:
    """What a compiled program is specialised to in ``tree``: its structure and each leaf's
    shape and dtype (weak types aside: the engine passes arrays, never bare Python numbers)."""
    leaves, structure = jax.tree_util.tree_flatten(tree)
    return structure, tuple((x.shape, x.dtype) for x in leaves)


ProgramKey = tuple  # (function name, static arguments, signature of the dynamic ones)
CACHE_HIT = "/jax/compilation_cache/cache_hits"  # JAX's event, in the compiling thread
# Persistent-cache hits of the compile under way (each thread has its own context).
_CACHE_HITS: ContextVar[list[int] | None] = ContextVar("sona_cache_hits", default=None)


def _count_cache_hit(event: str, **_: Any) -> None:
    hits = _CACHE_HITS.get()
    if event == CACHE_HIT and hits is not None:
        hits[0] += 1


jax.monitoring.register_event_listener(_count_cache_hit)


@dataclass(eq=False)
class Programs:
    """The compiled programs of one served shape.

    ``key`` is the `ShapeKey` the set serves; programs are looked up by `ProgramKey`.
    compiled: programs compiled in this process; loaded: programs adopted from elsewhere
    (`adopt`, e.g. executables saved by an earlier process); unplanned: programs compiled on
    the request path because no plan named them. ``from_cache``: programs JAX's persistent
    compilation cache gave rather than XLA (they run, but serialized again they lose their
    kernels: with jaxlib 0.10 such a file fails in the next process with ``Function ... not
    found``, so they are never saved); ``saved_forms``: the serialized form each adopted
    executable came from, to be written back as it was, for the same reason.
    """

    key: Hashable
    executables: dict[ProgramKey, jax.stages.Compiled] = field(default_factory=dict)
    compiled: int = 0
    loaded: int = 0
    unplanned: int = 0
    from_cache: set[ProgramKey] = field(default_factory=set)
    saved_forms: dict[ProgramKey, Any] = field(default_factory=dict)
    planned: bool = False  # the plan has run: a program compiled after is an unplanned one
    # The first argument of the last call and its signature: the engine's state, the same
    # object call after call (its 40-odd arrays cost more to read than the rest of a key).
    _first: Any = field(default=None, repr=False)
    _first_signature: tuple = field(default=(), repr=False)

    def __len__(self) -> int:
        return len(self.executables)

    def run(
        self,
        fn: Callable,
        args: Sequence = (),
        kwargs: dict | None = None,
        static: dict | None = None,
    ):
        """``fn(*args, **kwargs, **static)`` through this set's executable for these shapes,
        compiled first when the set has none. ``static``: the arguments ``fn`` is jitted static
        on; ``kwargs``: dynamic arguments that follow a static one in ``fn``'s signature."""
        kwargs, static = kwargs or {}, static or {}
        first = args[0] if args else None
        if first is not self._first:
            self._first, self._first_signature = first, signature(first)
        rest = signature((args[1:], kwargs))
        program = (function_name(fn), tuple(sorted(static.items())), self._first_signature, rest)
        executable = self.executables.get(program)
        if executable is None:
            executable = self._compile(program, fn, args, kwargs, static)
        return executable(*args, **kwargs)

    def _compile(self, program: ProgramKey, fn, args, kwargs, static) -> jax.stages.Compiled:
        hits = [0]
        token = _CACHE_HITS.set(hits)
        try:
            executable = fn.lower(*args, **kwargs, **static).compile()
        finally:
            _CACHE_HITS.reset(token)
        hit = hits[0] > 0
        # Two threads may compile the same program: the first one kept wins, the other is freed.
        kept = self.executables.setdefault(program, executable)
        if hit and kept is executable:
            self.from_cache.add(program)
        executable = kept
        self.compiled += 1
        if self.planned:
            self.unplanned += 1
        return executable

    def adopt(
        self,
        executables: dict[ProgramKey, jax.stages.Compiled],
        saved_forms: dict[ProgramKey, Any] | None = None,
    ) -> None:
        """Take executables compiled elsewhere (the same shapes, loaded from disk), with the
        serialized form each was loaded from."""
        for program, executable in executables.items():
            if program not in self.executables:
                self.executables[program] = executable
                if saved_forms is not None and program in saved_forms:
                    self.saved_forms[program] = saved_forms[program]
                self.loaded += 1


class ProgramLibrary:
    """The program sets alive in a process, by `ShapeKey`: engines of one shape (a catalogue
    write that fits the capacity, a model version with the same shapes, an experiment's model
    arm) share one set; a set no engine holds is gone (a weak reference), and its executables
    with it."""

    def __init__(self, shapes: ServedShapes | None = None):
        self.shapes = shapes or ServedShapes()
        self._sets: weakref.WeakValueDictionary[Hashable, Programs] = weakref.WeakValueDictionary()
        # Called with each new set and the library (the service loads saved executables into
        # it), and with each set whose plan has compiled (the service saves it).
        self.on_new_set: Callable[[Programs, ProgramLibrary], None] | None = None
        self.on_planned: Callable[[Programs, ProgramLibrary], None] | None = None

    def programs(self, key: Hashable) -> Programs:
        """The live set for ``key``, or a new one (empty, or with what `on_new_set` adds)."""
        found = self._sets.get(key)
        if found is None:
            found = Programs(key)
            if self.on_new_set is not None:
                self.on_new_set(found, self)
            self._sets[key] = found
        return found

    def planned(self, programs: Programs) -> None:
        """``programs``' plan has compiled (`on_planned`)."""
        programs.planned = True
        if self.on_planned is not None:
            self.on_planned(programs, self)

    def live(self) -> list[Programs]:
        """The sets some engine still holds."""
        return list(self._sets.values())

    def live_programs(self) -> int:
        """Executables held by live sets."""
        return sum(len(p) for p in self.live())


def forget_jit_caches() -> None:
    """Empty jit's own caches (traces, lowerings, executables) of the whole process.

    `Programs.run` compiles ahead of time, but jit's caches keep a reference to each lowering
    and executable too; without this a set no engine holds would never be freed. Executables
    held by live sets keep working; plain jitted calls elsewhere compile again when next used.
    """
    jax.clear_caches()
