"""What parsed copies cost: a hit read from the YAML, from a parsed copy, and the copies'
write at session end, per cassette, for the old copies (trusted while the YAML's size and
mtime hold), the copies checked by the SHA-256 of the YAML's bytes (what the file store
does), and one pack file per model version (the alternative weighed and not taken).

    python benchmarks/bench_copies.py                 # 2,000 cassettes, 5 rounds: about 30 s on 2 cores
    python benchmarks/bench_copies.py --entries 500 --rounds 3

The cassettes are made as ``bench.py`` makes them (``bench_corpus``: two recorded through the
cache, then substituted), half of them streamed, all of one model version. Every figure
is one read (or write) of every cassette in a new ``FileStore``, divided by their number:
the median of the rounds. The files are in the page cache: "cold" means not yet in the
cache's memory, not on disk. The old store's read and write are copied below
(``old_read``, ``old_write``), the baseline; both write through today's ``write_atomic``,
so only what a copy holds and how it is checked differs.

Rows:

- hit from the YAML: the first read ever (no copy yet): PyYAML parses it;
- hit from a parsed copy: the first read in a session of a cassette an earlier session
  read; the pack column adds the pack's load divided among the cassettes read, shown
  for a session that reads all of them and one that reads 40;
- write at session end: writing the copies of every cassette a session read first from
  its YAML (``FileStore.close``), as after a first run on a fresh checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_corpus as bc

from llm_cache.atomic import write_atomic
from llm_cache.cassette import Entry, load_entry, parse_entry
from llm_cache.errors import CassetteError
from llm_cache.stores import parsed
from llm_cache.stores.files import FileStore

KEY = re.compile(rb"\nkey: ([0-9a-f]{64})\n")
SMALL_SESSION = 40


def old_read(path: Path, key: str, copy: Path) -> Entry:
    """FileStore._read before copies were checked by hash: trusted while size and mtime hold."""
    stat = os.stat(path)
    stamp = (stat.st_size, stat.st_mtime_ns)
    try:
        with open(copy, "rb") as handle:
            data = json.loads(handle.read())
        if (data["size"], data["mtime_ns"]) == stamp:
            return parse_entry(data["doc"], str(path), expected_key=key)
    except (OSError, ValueError, KeyError, TypeError, CassetteError):
        pass
    return load_entry(path.read_bytes(), str(path), expected_key=key)


def old_write(pending: dict[Path, tuple[tuple[int, int], Entry]]) -> None:
    """FileStore.close before: one file per copy holding the YAML's size and mtime."""
    made: set[Path] = set()
    for copy, (stamp, entry) in pending.items():
        if copy.parent not in made:
            copy.parent.mkdir(parents=True, exist_ok=True)
            made.add(copy.parent)
        body = json.dumps({"size": stamp[0], "mtime_ns": stamp[1], "doc": entry.to_doc()},
                          ensure_ascii=False, separators=(",", ":"))
        write_atomic(copy, body)


def interleaved(rounds: int, items: list[Path], cases: dict[str, Callable[[Path], object]],
                before: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Microseconds per cassette of each case, the median over ``rounds``. The cases take
    turns on every cassette (not every round), so that a busy disk or CPU slows them alike."""
    totals: dict[str, list[float]] = {name: [] for name in cases}
    clock = time.perf_counter
    for _ in range(rounds):
        before()
        spent = dict.fromkeys(cases, 0.0)
        for item in items:
            for name, case in cases.items():
                started = clock()
                case(item)
                spent[name] += clock() - started
        for name in cases:
            totals[name].append(spent[name] / len(items) * 1e6)
    return {name: statistics.median(values) for name, values in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=2000, help="cassettes of the model version")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (the median is shown)")
    args = parser.parse_args(argv)
    n, rounds = args.entries, args.rounds
    work = Path(tempfile.mkdtemp(prefix="bench-copies-"))
    try:
        templates = bc.record_templates(work)
        root = work / "cassettes"
        bc.write_corpus(templates, root, n)
        paths = sorted((root / bc.MODEL).glob("*.yaml"))
        keys = {p: KEY.search(p.read_bytes()[:200]).group(1).decode() for p in paths}  # type: ignore[union-attr]
        meta = root / ".llm-cache"
        old_copies = work / "old-copies"
        yaml_bytes = sum(p.stat().st_size for p in paths) / n

        entries = {p: load_entry(p.read_bytes(), str(p)) for p in paths}
        digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
        stores: dict[str, FileStore] = {}

        def old_one(p: Path) -> object:
            return old_read(p, keys[p], old_copies / (p.stem + ".json"))

        def new_one(p: Path) -> object:
            return stores["read"].get(keys[p], bc.MODEL)

        def hash_one(p: Path) -> object:
            with open(p, "rb") as handle:
                return hashlib.sha256(handle.read()).hexdigest()

        def old_write_one(p: Path) -> None:
            old_write({old_copies / (p.stem + ".json"): ((p.stat().st_size, p.stat().st_mtime_ns), entries[p])})

        def new_write(name: str, in_place: bool) -> Callable[[Path], None]:
            def write(p: Path) -> None:  # what FileStore.close does for one copy it queued
                store = stores[name]
                store._pending = {store._copies.path(bc.MODEL, p.stem): (digests[p], entries[p])}
                if in_place:
                    store.close()
                    return
                parsed.overwrite = lambda path, data: False  # type: ignore[assignment]
                try:
                    store.close()
                finally:
                    parsed.overwrite = overwrite
            return write

        overwrite = parsed.overwrite

        def reset_writes() -> None:
            for name in ("old-copies", "new-root", "atomic-root"):
                shutil.rmtree(work / name, ignore_errors=True)
            (work / "new-root" / bc.MODEL).mkdir(parents=True)
            (work / "atomic-root" / bc.MODEL).mkdir(parents=True)
            stores["in place"] = FileStore(work / "new-root", copies_from=0)
            stores["atomic"] = FileStore(work / "atomic-root", copies_from=0)

        def reset_reads(with_copies: bool) -> Callable[[], None]:
            def reset() -> None:
                stores["read"] = FileStore(root, copies_from=0)  # a new session: nothing in memory
                if not with_copies:
                    shutil.rmtree(meta, ignore_errors=True)
                    shutil.rmtree(old_copies, ignore_errors=True)
            return reset

        # the first session ever: every hit from the YAML, then the copies written at its end
        first = interleaved(rounds, paths, {"old": old_one, "new": new_one, "hash": hash_one},
                            before=reset_reads(False))
        writes = interleaved(rounds, paths, {"old": old_write_one, "new": new_write("in place", True),
                                             "new, atomic": new_write("atomic", False)}, before=reset_writes)
        # a later session: the copies an earlier one left
        reset_reads(False)()
        for p in paths:
            new_one(p)
        stores["read"].close()
        for p in paths:
            old_write_one(p)
        later = interleaved(rounds, paths, {"old": old_one, "new": new_one}, before=reset_reads(True))

        # the alternative: one pack per model version, all copies, keyed by file name
        pack = work / "pack.json"

        def pack_write() -> None:
            body = {p.name: [digests[p], entries[p].to_doc()] for p in paths}
            write_atomic(pack, json.dumps({"format": 1, "copies": body}, ensure_ascii=False, separators=(",", ":")))

        pack_w = statistics.median(_timed(pack_write) for _ in range(rounds)) / n * 1e6
        load_ms = statistics.median(_timed(lambda: json.loads(pack.read_bytes())) for _ in range(rounds)) * 1e3
        loaded = json.loads(pack.read_bytes())["copies"]

        def pack_one(p: Path) -> object:
            with open(p, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            row = loaded[p.name]
            return parse_entry(row[1], str(p), expected_key=keys[p]) if row[0] == digest else None

        pack_hit = interleaved(rounds, paths, {"pack": pack_one})["pack"]
        pack_bytes = pack.stat().st_size
        old_yaml, new_yaml, hash_cost = first["old"], first["new"], first["hash"]
        old_w, new_w, atomic_w = writes["old"], writes["new"], writes["new, atomic"]
        old_copy, new_copy = later["old"], later["new"]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows: dict[str, dict[str, str]] = {}
    all_read = pack_hit + load_ms * 1e3 / n
    few_read = pack_hit + load_ms * 1e3 / SMALL_SESSION
    rows["hit from the YAML (no copy yet)"] = {"old": f"{old_yaml:.1f}", "new": f"{new_yaml:.1f}", "pack": "(as new)"}
    rows["hit from a parsed copy"] = {
        "old": f"{old_copy:.1f}", "new": f"{new_copy:.1f}",
        "pack": f"{all_read:.1f} / {few_read:.0f}"}
    rows["write at session end"] = {"old": f"{old_w:.1f}", "new": f"{new_w:.1f}", "pack": f"{pack_w:.1f}"}
    rows["  of a hit: read and hash the YAML"] = {"old": "", "new": f"{hash_cost:.1f}", "pack": ""}
    print(f"parsed copies: {n} cassettes of one model version ({yaml_bytes / 1024:.1f} KiB each on average), "
          f"file store, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; microseconds per cassette, "
          f"median of {rounds} rounds")
    print(f"{'':34}{'old: size+mtime':>17}{'new: sha256':>13}{'pack: all / 40 read':>22}")
    for name, row in rows.items():
        print(f"{name:34}{row['old']:>17}{row['new']:>13}{row['pack']:>22}")
    print(f"pack: {pack_bytes / 1e6:.1f} MB, {load_ms:.1f} ms to load, whichever cassettes a session reads; "
          f"it is rewritten whole when one cassette changes")
    print(f"of a hit from a copy: {hash_cost:.1f} us read and hash the YAML; "
          f"a hit from a copy saves {new_yaml - new_copy:.0f} us of PyYAML")
    print(f"the new copies written atomically (temporary file and rename) instead of in place: "
          f"{atomic_w:.1f} us")
    return 0


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())
