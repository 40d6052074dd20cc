"""Baseline for bench/pool_bench.lua: multiprocessing.Pool(2).map of a
trivial function over N integers, at chunksize 1 and at the default
chunksize. Prints one JSON line: tasks/s (best of the runs) per setting."""
import json
import multiprocessing
import sys
import time


def inc(x):
    return x + 1


def best_rate(pool, items, chunksize, runs):
    best = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        out = pool.map(inc, items, chunksize=chunksize)
        dt = time.perf_counter() - t0
        assert out[-1] == items[-1] + 1
        best = max(best, len(items) / dt)
    return best


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    items = list(range(n))
    with multiprocessing.Pool(2) as pool:
        pool.map(inc, range(1000))  # warm up
        result = {
            "n": n,
            "chunksize1": best_rate(pool, items, 1, 2),
            "default": best_rate(pool, items, None, 5),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
