"""Meridian's benchmark harness: the gateway beside a direct connection to the
same emulated upstream, in one run, with the same closed-loop workload.

Entry point ``python -m bench`` (see bench/README.md). Modules, one concern each:
``stats`` percentiles; ``stream`` per-response SSE accounting; ``loadgen`` the
closed-loop client in its own process; ``procs`` child processes and /proc;
``stack`` emulator + gateway (+ nginx, LiteLLM); ``scenarios`` workloads and
targets; ``runner`` the matrix; ``memory`` the idle-stream probe; ``results``
and ``report`` the output; ``profile`` (``python -m bench.profile``) the
gateway under cProfile on the same workload.
"""
