"""The sub-commands around the daemon.

``bench`` measures throughput and latency against a local broker, ``demo`` runs the whole
product on one machine, ``replay`` produces a dataset's rows into a topic as events, and
``evaluate`` scores a labelled dataset with a checkpoint (metrics, report and plots),
``compare`` sets the default detector beside kNN and IsolationForest over dataset files,
``nab_scoring`` scores detections as the Numenta Anomaly Benchmark does, and
``daemon_thread`` runs the daemon in a thread for the demo and the bench.
"""
