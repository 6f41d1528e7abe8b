"""What a run leaves behind, one job per module.

baseline     find the predecessor in the run history and load its evidence (store reads, before the load)
assess       the verdict against the predecessor and the report's predecessor section (pure)
report       assemble the report document from a finished run (pure, run in a thread); its file and schema
render       text for a terminal: the report, the history table, two runs compared (pure)
history      save a finished run to the SQLite history and MLflow
backend      the RunHistory protocol: the SQLite file or MLflow, read the same way
compare      two stored runs side by side for `profiler compare` (contexts, history reads and paired tests)
store        the SQLite run history file
tracking     MLflow as a two-way history: logging and reading back
context      the run's context (what moves the figures) for the report
junit        the verdict as JUnit XML (pure)
summary      the verdict as Markdown (pure)
cioutput     write the JUnit and Markdown files
recent_runs  the runs /runs lists: the SQLite history or this process' memory
exporter     Prometheus metrics from the live run state
merge        several sidecars' reports as one
"""
