"""Reads `perf script -F ip,sym` (call stacks, leaf first, blank-line
separated) and prints, for each function named in argv[2] (spaces
between), its inclusive share of the samples times argv[1] (CPU
microseconds per write): the us per write spent in it and below it.
A function whose name starts with one given (ExecBRUpdateTriggers also
matches a backport's ExecBRUpdateTriggersNew) counts."""
import sys

us_per_write = float(sys.argv[1])
wanted = sys.argv[2].split()
samples, stack = [], []
for line in sys.stdin:
    parts = line.split(None, 1)
    if not parts:
        if stack:
            samples.append(stack)
        stack = []
        continue
    stack.append(parts[1].strip() if len(parts) > 1 else parts[0])
if stack:
    samples.append(stack)
total = len(samples) or 1
for name in wanted:
    hits = sum(1 for s in samples if any(f.startswith(name) for f in s))
    print(f"{hits / total * us_per_write:7.1f} us  {name}")
