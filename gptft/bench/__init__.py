"""`python -m gptft.bench`: gptft's default (fast) paths against the book-equivalent ones on this machine.

rows.py         what each row runs (shared by both sides)
orchestrate.py  the command: plan, run each row in its own child process, write the files
measure.py      a child: one row, timed and counted (flops.py: the FLOP estimate and the matmul peak)
report.py       the table, the figures it states (speedups, memory) and the notes

The speed targets the figures must meet live in tests/test_bench.py, checked on a recorded run.
"""
