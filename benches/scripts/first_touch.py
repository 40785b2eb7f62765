#!/usr/bin/env python3
"""What it costs this machine to hand a process fresh memory (issue 15, part 6).

A rebuild of the large estate grows the graph to ~1.5 GB, and every page of it is written
for the first time during the catch-up. On bare metal the kernel zeroes a fresh page at a few
GB/s; in a virtual machine that gives freed memory back to its host (Firecracker's free page
reporting, `page_reporting` in /sys/module) the host must supply each page again, and the
same first touch can cost 20 times more. Rebuild figures are not comparable across machines
(or across hours on one VM) without this number next to them.

    python3 benches/scripts/first_touch.py [MEGABYTES] [ROUNDS]

Maps MEGABYTES (default 1024) of anonymous memory ROUNDS times (default 3), writes one byte
per 4 KiB page, and prints the seconds per GB for small pages and for huge pages (madvise).
"""

import mmap
import sys
import time

PAGE_BYTES = 4096


def touch_seconds(megabytes: int, huge: bool) -> float:
    size = megabytes << 20
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge and hasattr(mmap, "MADV_HUGEPAGE"):
        region.madvise(mmap.MADV_HUGEPAGE)
    started = time.perf_counter()
    for offset in range(0, size, PAGE_BYTES):
        region[offset] = 1
    elapsed = time.perf_counter() - started
    region.close()
    return elapsed


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if megabytes <= 0 or rounds <= 0:
        sys.exit("usage: first_touch.py [MEGABYTES > 0] [ROUNDS > 0]")
    try:
        with open("/sys/module/page_reporting/parameters/page_reporting_order") as f:
            print(f"free page reporting: on (order {f.read().strip()})")
    except OSError:
        print("free page reporting: not present")
    for huge in (False, True):
        kind = "huge pages" if huge else "4 KiB pages"
        for _ in range(rounds):
            seconds = touch_seconds(megabytes, huge)
            print(f"{kind}: {megabytes} MB first touched in {seconds:.3f} s = {seconds * 1024 / megabytes:.2f} s/GB")


if __name__ == "__main__":
    main()
