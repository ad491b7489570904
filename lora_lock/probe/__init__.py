"""The only layer that imports torch, transformers models and peft."""
