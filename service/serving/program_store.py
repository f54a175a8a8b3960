"""Compiled program sets saved on disk, so that a restart, or a second process of the same host,
loads its programs instead of compiling them (JAX's persistent compilation cache skips XLA but
still traces every program: 17 s of a warm restart here; loading a saved set takes a fraction
of a second).

One file per program set (`sona_jax.serve.programs.Programs`), named by a digest of everything
its executables depend on: jax and jaxlib versions, the device kind and the CPU's features, a
digest of the engine's code (`sona_jax/`: an upgrade that changes a program compiles it again
rather than loading the old one), the served shapes and the set's `ShapeKey` (array shapes,
compiled config, list widths). A file
starts with the SHA-256 of its payload, checked before anything is loaded, as the model
version's arrays are; a file that fails the check, or an executable this jaxlib cannot load,
is ignored and the set compiles as it would without one. Only sets whose whole plan compiled
are saved; the least recently used files past ``serving.saved_programs`` are removed.

Only executables XLA compiled in this process are serialized; one that JAX's persistent
compilation cache gave is left out (it compiles, from that cache, at the next start) and one
loaded from a file is written back in the form it was loaded from. Serialized a second time,
jaxlib 0.10's CPU executables lose their kernels: a set saved that way loaded fine and then
failed at its first call in the next process (``Function bitcast_copy_fusion not found``: every
new viewer's recommendations answered 500 after a warm restart).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import time
from pathlib import Path

import jax
import jaxlib
from jax.experimental import serialize_executable

import sona_jax
from sona_jax.serve.programs import ProgramLibrary, Programs

log = logging.getLogger("sona.programs")
MAGIC = b"SONA-PROGRAMS 2\n"  # 1: files that may hold executables serialized twice
SUFFIX = ".programs"


def _machine() -> str:
    """What an executable compiled here depends on besides its program: versions, the device
    kind and (on the CPU) the instruction-set features it was compiled for."""
    device = jax.devices()[0]
    features = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                features = hashlib.sha256(line.encode()).hexdigest()[:16]
                break
    return f"jax {jax.__version__} jaxlib {jaxlib.__version__} {device.platform} {device.device_kind} {features}"


def engine_code_digest() -> str:
    """SHA-256 of every source file of the engine (`sona_jax`), by path: what its programs are
    traced from."""
    root = Path(sona_jax.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class ProgramStore:
    """Program sets saved under ``folder`` (created when first written)."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = Path(folder), keep
        self.machine = _machine()
        self.code = engine_code_digest()
        self.loaded_sets = self.saved_sets = 0

    def attach(self, library: ProgramLibrary) -> None:
        """Load saved executables into every new set of ``library`` and save each set whose
        plan has compiled."""
        library.on_new_set = self.load_into
        library.on_planned = self.save

    def path(self, programs: Programs, library: ProgramLibrary) -> Path:
        name = repr((MAGIC, self.machine, self.code, library.shapes, programs.key))
        return self.folder / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}{SUFFIX}"

    def load_into(self, programs: Programs, library: ProgramLibrary) -> None:
        """Adopt the executables saved for ``programs``' shape, if a sound file holds them."""
        path = self.path(programs, library)
        started = time.perf_counter()
        try:
            data = path.read_bytes()
        except OSError:
            return
        try:
            payload = _checked(data)
            saved = pickle.loads(payload)  # our own file, its digest checked
            forms = {key: (blob, ins, outs) for key, blob, ins, outs in saved["programs"]}
            executables = {
                key: serialize_executable.deserialize_and_load(*form) for key, form in forms.items()
            }
        except Exception as error:  # noqa: BLE001 - a bad file costs a compile, never a start
            log.warning("ignoring saved programs %s: %s", path.name, error)
            return
        programs.adopt(executables, forms)
        programs.planned = programs.planned or saved["planned"]
        self.loaded_sets += 1
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: pruned last
        log.info(
            "loaded %d saved programs in %.2fs (%s)",
            len(executables),
            time.perf_counter() - started,
            path.name,
        )

    def save(self, programs: Programs, library: ProgramLibrary) -> None:
        """Write ``programs`` (a set whose plan compiled) unless its file exists already."""
        if self.keep <= 0 or programs.loaded == len(programs):
            return  # nothing new: everything came from its file
        path = self.path(programs, library)
        entries, unsaved = [], []
        for key, executable in list(programs.executables.items()):
            if key in programs.saved_forms:
                entries.append((key, *programs.saved_forms[key]))
                continue
            if key in programs.from_cache:
                unsaved.append(key[0])
                continue
            try:
                entries.append((key, *serialize_executable.serialize(executable)))
            except Exception:  # noqa: BLE001 - some XLA ops cannot be saved: that one compiles
                unsaved.append(key[0])
        if unsaved:
            log.info(
                "programs not saved (from the compilation cache, or not serializable: they "
                "compile at each start): %s",
                unsaved,
            )
        try:
            complete = programs.planned and not unsaved
            payload = pickle.dumps({"planned": complete, "programs": entries})
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(
                MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
            )
            partial.replace(path)  # atomic: a reader sees the old file or the whole new one
        except Exception as error:  # noqa: BLE001 - serving never depends on saving
            log.warning("programs not saved: %s", error)
            return
        self.saved_sets += 1
        log.info("saved %d programs (%s)", len(entries), path.name)
        self._prune()

    def _prune(self) -> None:
        files = sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - self.keep)]:
            with contextlib.suppress(OSError):
                old.unlink()


def _checked(data: bytes) -> bytes:
    """The payload of a saved file whose digest matches; raises ValueError otherwise."""
    if not data.startswith(MAGIC):
        raise ValueError("not a saved program set")
    digest, _, payload = data[len(MAGIC) :].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("digest mismatch")
    return payload
