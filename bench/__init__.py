"""The benchmark: a load generator and the workloads of shared/BENCHMARKS.md, run against a private stack."""
