"""End-to-end runs: train (or reuse) a model, prune it, re-train it, measure and report."""
