"""Command-line programs (gnt-job, gnt-debug, ...), one module per script."""
