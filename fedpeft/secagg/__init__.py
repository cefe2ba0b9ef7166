"""SecAgg+ (Bell et al., CCS 2020): the protocol's computations, over numpy and bytes.

The server learns the sum of the sampled nodes' weighted, clipped updates and nothing
about any one of them, and the sum survives nodes dropping out after sharing their keys.
Each node's stages are in :mod:`fedpeft.secagg.client`, the server's in
:mod:`fedpeft.secagg.graph` (who talks to whom) and :mod:`fedpeft.secagg.server` (the
unmasked sum). The primitives are Flower's (``flwr.common.secure_aggregation``); none of
this imports torch, so a node runs the key stages without it.
"""

from fedpeft.secagg.errors import SecAggError
from fedpeft.secagg.params import SecAggParams

__all__ = ["SecAggError", "SecAggParams"]
