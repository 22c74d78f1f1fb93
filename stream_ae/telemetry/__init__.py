"""What the daemon tells the outside: Prometheus metrics (``metrics``), and liveness, readiness
and the HTTP server that serves them with the metrics (``health``).

Nothing here knows the pipeline: the loop and the service hand these objects plain values.
"""
