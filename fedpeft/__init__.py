"""FedPEFT shared core: configuration, backbones, data and array helpers.

Nothing in this package depends on Flower's app objects; ``server_app`` and
``client_app`` build on it.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
