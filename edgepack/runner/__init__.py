"""The device-side runner shipped inside every bundle (``run_bundle.py``); it must not import edgepack."""
