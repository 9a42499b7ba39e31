"""What happens to recorded data over its life: forgetting it (forget.py and
the persisted rule in rule.py), backing it up (backup.py), exporting it
(export.py). The commands are in cli.py."""
