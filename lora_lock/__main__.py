from lora_lock._cli import entry

entry()
