"""edgepack: turn a trained model into verified deployment bundles for edge targets.

Importing this package imports no ML framework; every framework is loaded lazily at the edges.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
