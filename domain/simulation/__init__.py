"""What-if replay: the recorded submissions of a window of the log, run again on a simulated
clock through the dispatch rules of a (different) registry, and a report of what would have
happened beside what did (``docs/simulation.md``).

Pure: ``workload.py`` folds decoded events into ``Submission``s, ``engine.py`` simulates,
``report.py`` measures and renders. Reading the log is the adapter's part
(``adapters/simulation.py``).
"""
