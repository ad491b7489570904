"""Facts read from files without loading weights or importing torch."""
