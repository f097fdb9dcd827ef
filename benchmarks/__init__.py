"""Side-by-side benchmarks: each runs the engine and a baseline in one process run and prints
ratios (`python -m benchmarks.<name> --help`)."""
