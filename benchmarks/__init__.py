"""Speed and input-pipeline measurements (see benchmarks/README.md)."""
