"""FedPEFT shared core: configuration, backbones, data and array helpers.

``server_app`` and ``client_app`` build on it. The tools around it (launchers, sweeps,
reports, deployment, export, inference) live in ``fedpeft.tools``, which the rest of the
package never imports.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
