"""`herald loadtest`: load scenarios against Herald nodes (and peers), with a loss/latency report."""
