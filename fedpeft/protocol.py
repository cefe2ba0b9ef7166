"""What the ServerApp and the ClientApp exchange, named once: messages, records, keys.

Message types and record names are Flower's where Flower defines them
(:class:`flwr.common.MessageType`, the defaults of
:class:`flwr.serverapp.strategy.FedAvg`); the rest are this project's. The scalar
validators at the end are the checks every reply's numbers go through (a ``bool`` is
an ``int`` to Python, never to a reply check).
"""

from __future__ import annotations

import math

from flwr.common import MessageType

# Message types
TRAIN = MessageType.TRAIN
EVALUATE = MessageType.EVALUATE
QUERY = MessageType.QUERY
NCM_ACTION = "ncm"  # FedNCM's statistics: the ``train.ncm`` message type
NCM = f"{TRAIN}.{NCM_ACTION}"

# Record names in a message's RecordDict
ARRAYS = "arrays"  # FedAvg's default arrayrecord_key
CONFIG = "config"  # FedAvg's default configrecord_key
METRICS = "metrics"  # a reply's MetricRecord
NODE = "node"  # the query reply's MetricRecord: the node's partition id and rank
COMM = "comm"  # a reply's ConfigRecord naming its uplink codec

# Config keys (server → client)
SERVER_ROUND = "server-round"
LR = "lr"
DOWNLINK = "comm-downlink"  # the codec the global arrays travel in

# Metric keys (client → server)
NUM_EXAMPLES = "num-examples"  # FedAvg's default weighted_by_key
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
LORA_RANK = "lora-rank"
TRAIN_LOSS = "train-loss"
TRAIN_ACC = "train-acc"
EVAL_LOSS = "eval-loss"
EVAL_ACC = "eval-acc"
DP_EPSILON = "dp-epsilon"
WORKER_PID = "worker-pid"
WORKER_MODEL_BUILDS = "worker-model-builds"
BYTES_UP = "bytes-up"
LOCAL_RESTORED = "local-restored"
TRAIN_SECONDS = "train-seconds"

# The ``comm`` record of an encoded reply
CODEC = "codec"
PAYLOAD = "payload"
CARRIED_AS = "carried-as"
UPDATE = "update"  # the payload an uplink codec carries

# FedNCM's reply arrays
SUMS = "sums"
COUNTS = "counts"

# Context.state: the uplink's error-feedback residual (client-side only)
RESIDUAL = "comm-residual"

# Secure aggregation (SecAgg+): the stages, in order
SECAGG_SETUP = "setup"
SECAGG_SHARE_KEYS = "share-keys"
SECAGG_MASKED_VECTOR = "masked-vector"
SECAGG_UNMASK = "unmask"
SECAGG_STAGES = (SECAGG_SETUP, SECAGG_SHARE_KEYS, SECAGG_MASKED_VECTOR, SECAGG_UNMASK)

# Secure aggregation: the stages' message types (``train.<action>``; an action is an
# identifier) and what their messages and replies carry, in one ConfigRecord
SECAGG_SETUP_ACTION = "secagg_setup"
SECAGG_SHARE_KEYS_ACTION = "secagg_share_keys"
SECAGG_MASKED_ACTION = "secagg_masked"
SECAGG_UNMASK_ACTION = "secagg_unmask"
SECAGG_ACTIONS = {
    SECAGG_SETUP: SECAGG_SETUP_ACTION,
    SECAGG_SHARE_KEYS: SECAGG_SHARE_KEYS_ACTION,
    SECAGG_MASKED_VECTOR: SECAGG_MASKED_ACTION,
    SECAGG_UNMASK: SECAGG_UNMASK_ACTION,
}
SECAGG = "secagg"  # the stages' ConfigRecord (and the masked reply's ArrayRecord)
SECAGG_DESTINATIONS = "secagg-destinations"  # share-keys reply: node ids, as ciphertexts
SECAGG_SOURCES = "secagg-sources"  # masked message: node ids, as ciphertexts
SECAGG_CIPHERTEXTS = "secagg-ciphertexts"
SECAGG_MASKED = "masked-vector"  # the masked reply's one array
SECAGG_ACTIVE = "secagg-active"  # unmask message: whose seed shares the server asks for
SECAGG_DROPPED = "secagg-dropped"  # ... and whose mask key shares
SECAGG_OWNERS = "secagg-owners"  # unmask reply: node ids, as shares
SECAGG_SHARES = "secagg-shares"

# Secure aggregation: the protocol parameters (the setup stage's config keys)
SECAGG_NUM_CLIENTS = "secagg-num-clients"
SECAGG_NUM_SHARES = "secagg-num-shares"
SECAGG_THRESHOLD = "secagg-threshold"
SECAGG_CLIPPING_RANGE = "secagg-clipping-range"
SECAGG_QUANTIZATION_BITS = "secagg-quantization-bits"
SECAGG_MODULUS_BITS = "secagg-modulus-bits"
SECAGG_MAX_WEIGHT = "secagg-max-weight"

# Context.state: a node's SecAgg+ state, one ConfigRecord (client-side only)
SECAGG_STATE = "secagg-state"
SECAGG_STAGE = "secagg-stage"  # the last stage the node completed
SECAGG_NODE_ID = "secagg-node-id"
SECAGG_SK1 = "secagg-sk1"  # encrypts the shares sent to each neighbour
SECAGG_PK1 = "secagg-pk1"
SECAGG_SK2 = "secagg-sk2"  # agrees the pairwise mask seeds; Shamir-shared
SECAGG_PK2 = "secagg-pk2"
SECAGG_SEED = "secagg-seed"  # the private mask's seed; Shamir-shared
SECAGG_NEIGHBOURS = "secagg-neighbours"  # node ids, own included, ascending
SECAGG_NEIGHBOUR_PK1 = "secagg-neighbour-pk1"  # in the order of SECAGG_NEIGHBOURS
SECAGG_NEIGHBOUR_PK2 = "secagg-neighbour-pk2"
SECAGG_SHARE_OWNERS = "secagg-share-owners"  # whose shares the node holds: itself, its senders
SECAGG_SEED_SHARES = "secagg-seed-shares"  # in the order of SECAGG_SHARE_OWNERS
SECAGG_SK2_SHARES = "secagg-sk2-shares"

# Metrics that may legitimately be non-finite: a diverged loss (the server warns),
# ε = inf under DP with noise multiplier 0.
NON_FINITE_OK = (TRAIN_LOSS, DP_EPSILON)


def is_int(x: object) -> bool:
    """Whether ``x`` is an ``int`` and not a ``bool``."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """Whether ``x`` is an ``int`` or ``float`` and not a ``bool``."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def is_positive_int(x: object) -> bool:
    """Whether ``x`` is an ``int`` ≥ 1 (not a ``bool``)."""
    return is_int(x) and x > 0  # type: ignore[operator]


def is_finite_positive(x: object) -> bool:
    """Whether ``x`` is a number in (0, inf) (not a ``bool``)."""
    return is_number(x) and 0 < x < math.inf  # type: ignore[operator]
