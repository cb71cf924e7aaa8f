"""Backends: one module per runtime, registered in ``registry.py``. Modules here import no framework at import time."""
