"""The lock as typed records: sections, file references and digests, read from and written to ``lora.lock``."""
