"""Tests of the lock model (``lora_lock.lock``)."""
