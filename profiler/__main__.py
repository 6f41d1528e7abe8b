"""`python -m profiler`: the same as the `profiler` command."""

from profiler.cli import main

main()
