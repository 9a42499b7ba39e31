"""Layer 1, capture: the hook program (hook.py and the stdlib-only modules it
loads), the offline spool (spool.py) and the hook installers (installers.py).
See docs/hooks.md."""
