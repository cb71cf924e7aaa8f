"""Model zoos: many models × many targets, built as independent cells (``edgepack zoo …``).

A zoo file (``zoo.toml``) lists models; each model × target is a *cell* with a content key (``keys``). Cells run on a
local process pool or as Ray tasks (``executors``), each one calling the ordinary pipeline, and their bundles are
kept in a content-addressed cache (``cache``: a folder or any fsspec URL). ``dashboard`` renders one report over all
cells and merges the outputs of cells built by separate CI jobs.

This package sits above the pipeline; nothing below it (pipeline, backends, sources) knows about zoos.
"""

SCALE_DISTS = ("ray", "fsspec", "s3fs")


def scale_extra() -> dict[str, str | None]:
    """Versions of the ``scale`` extra's packages (None: not installed), read from metadata; nothing is imported."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in SCALE_DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
