#!/usr/bin/python3
"""The floors of npred (docs/architecture.md): every #include "room/x.h" of a file in
src/, include/npred/ or cli/ points to its own room or to a room on a lower floor.
One check per file; ends with "N passed, N failed" like every test program."""
import os
import re
import sys

# room -> floor; rooms on one floor do not include each other
FLOORS = {
    "base": 0,
    "kernels": 1, "data": 1, "dist": 1,
    "nn": 2, "mpi": 2,
    "cores": 3, "readouts": 3,
    "model": 4,
    "io": 5,
    "train": 6,
    "viz": 7, "results": 7,
    "insilico": 8,
    "api": 9,  # include/npred/npred.h, the whole public API in one include
    "cli": 10,
}
# public headers belong to the room that implements them
PUBLIC = {
    "base.h": "base", "version.h": "base",
    "npy.h": "data", "data.h": "data", "video.h": "data", "simulate.h": "data",
    "dist.h": "dist", "mpi.h": "mpi",
    "model.h": "model", "preprocess.h": "model", "video_model.h": "model", "video_stream.h": "model",
    "train.h": "train", "video_train.h": "train", "eval.h": "train", "metrics.h": "train",
    "report.h": "viz", "results.h": "results", "video_eval.h": "results", "insilico.h": "insilico",
    "npred.h": "api",
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def room_of(path):
    """The room of a file (a path relative to the repository root), or None."""
    parts = path.split("/")
    if parts[0] == "src" and len(parts) == 3:
        return parts[1]
    if parts[:2] == ["include", "npred"] and len(parts) == 3:
        return PUBLIC.get(parts[2], "?")
    if parts[0] == "cli" and len(parts) == 2:
        return "cli"
    return None


def target_room(including, name):
    """The room of an #include "name" written in the file `including`."""
    if "/" not in name:  # next to the including file
        return room_of(os.path.join(os.path.dirname(including), name))
    head, rest = name.split("/", 1)
    if head == "npred":
        return PUBLIC.get(rest, "?")
    return head if head in FLOORS else "?"


def violations(path, lines):
    """(line number, message) for every include of `path` that does not point down."""
    room = room_of(path)
    out = []
    for no, line in enumerate(lines, 1):
        m = INCLUDE.match(line)
        if not m:
            continue
        to = target_room(path, m.group(1))
        if to == room:
            continue
        if room not in FLOORS or to not in FLOORS:
            out.append((no, f'"{m.group(1)}": room of {path} or of the header is not on any floor'))
        elif FLOORS[to] >= FLOORS[room]:
            out.append((no, f'"{m.group(1)}" is room {to} (floor {FLOORS[to]}), '
                            f'not below {room} (floor {FLOORS[room]})'))
    return out


def main():
    passed = failed = 0
    # the checker itself: an arrow up and one across a floor are caught, one down is not
    probes = [("src/nn/params.c", '#include "model/model.h"', 1),
              ("src/data/loader.c", '#include "kernels/conv2d.h"', 1),
              ("include/npred/data.h", '#include "npred/model.h"', 1),
              ("src/model/model.c", '#include "nn/params.h"', 0),
              ("cli/main.c", '#include "cli.h"', 0)]
    for path, line, want in probes:
        got = len(violations(path, [line]))
        if got == want:
            passed += 1
        else:
            failed += 1
            print(f"FAIL checker: {path}: {line}: {got} violations, expected {want}")
    files = []
    for top in ("src", "include/npred", "cli"):
        for d, _, names in os.walk(top):
            files += [os.path.join(d, n) for n in names if n.endswith((".c", ".h"))]
    for path in sorted(files):
        with open(path, encoding="utf-8") as f:
            bad = violations(path, f.read().split("\n"))
        if room_of(path) not in FLOORS:
            bad.insert(0, (0, f"room {room_of(path)} is not on any floor (add it to tests/test_floors.py "
                              "and docs/architecture.md)"))
        for no, msg in bad:
            print(f"FAIL {path}:{no}: {msg}")
        if bad:
            failed += 1
        else:
            passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
