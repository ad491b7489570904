"""Tiny real models and trained adapters for tests, the demo and the benchmarks (needs torch, transformers, peft)."""
