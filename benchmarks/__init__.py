"""The workloads of ``raybus bench``: raybus measured beside an anchor, in one run.

- ``runner``: the table of workloads (B1-B11) and the run: one local Ray, families in turn.
- ``over_http`` (B1-B3), ``in_process`` (B4-B5), ``brokers`` (B6-B7), ``inflight`` (B8),
  ``scaling`` (B9), ``data`` (B10), ``wrapper_overhead`` (B11): one module per family.
- ``server``: the SDK server both sides host; ``serving``: its HTTP server process and
  ``raybus up``'s; ``loadgen``: the HTTP clients' own process.
- ``measure``, ``report``, ``processes``, ``workloads``: closed loops and interleaved
  rounds, rows and their printing, CPU and memory from ``/proc``, what a family gets.
"""
