"""XGBoost Boosters in the binary format XGBoost 3.1 stopped reading, carried over to its JSON.

Before XGBoost 2.0, `save_model("model.bst")` wrote a binary format; every runtime of
AI Platform, and BigQuery ML's exports, deployed such files, and a pickled
`XGBClassifier` of those releases holds its Booster in it. XGBoost 3.1 removed the
reader. Treelite (by XGBoost's maintainers) still reads the format; its model is
written out here as the JSON model XGBoost documents (trees, thresholds, default
directions, leaf values, the base score, the objective), which today's XGBoost loads
and predicts with as the writing release did, with its own speed and in the user's own
calls to XGBoost alike. What Treelite reads but XGBoost's JSON cannot say the same way
(a categorical split, another comparison than `<`) is refused with its name.

A file is in that format when it does not start with `{` (JSON and UBJSON both do).
"""

from __future__ import annotations

import math
import re
import struct
import tempfile

# Objectives a binary model names, with the transform Treelite reads for them; the name
# itself is read from the file, since softmax and softprob share their transform.
_OBJECTIVE = re.compile(
    rb"(reg:squarederror|reg:linear|reg:logistic|reg:squaredlogerror|reg:pseudohubererror|"
    rb"reg:gamma|reg:tweedie|reg:absoluteerror|count:poisson|binary:logistic|binary:logitraw|"
    rb"binary:hinge|multi:softmax|multi:softprob|rank:pairwise|rank:ndcg|rank:map)"
)
# How each transform took a base score (in the objective's own space) to a margin;
# inverted here, since XGBoost's JSON keeps the base score in the objective's space.
_FROM_MARGIN = {
    "identity": lambda m: m,
    "sigmoid": lambda m: 1.0 / (1.0 + math.exp(-m)),
    "exponential": math.exp,
    "softmax": lambda m: m,
}


# The parameters an objective's JSON must hold for today's XGBoost to load it, at the
# defaults it writes; none of them changes a prediction, only training.
_OBJECTIVE_PARAMS = {
    "count:poisson": {"poisson_regression_param": {"max_delta_step": "0.7"}},
    "reg:tweedie": {"tweedie_regression_param": {"tweedie_variance_power": "1.5"}},
}


class Unconvertible(ValueError):
    """The model holds something XGBoost's JSON model cannot carry the same way."""


def is_binary(data: bytes) -> bool:
    """Whether a Booster file is in XGBoost's old binary format, not JSON or UBJSON."""
    return data[:1] != b"{"


def release(data: bytes) -> str:
    """The XGBoost release that wrote a binary model, as its header records it (from 1.0):
    two numbers after five fields of the learner's parameters, past a `binf` mark (1.1 on)."""
    at = 4 + 20 if data[:4] == b"binf" else 20
    if len(data) < at + 8:
        return "before 1.0"
    major, minor = struct.unpack_from("<II", data, at)
    return f"{major}.{minor}" if 0 < major < 100 else "before 1.0"


def to_json(data: bytes) -> bytes:
    """The JSON model of a binary Booster, as today's XGBoost reads it.

    Raises:
        ImportError: Treelite is not installed.
        Unconvertible: the model holds what the JSON model cannot carry the same way.
        Exception: Treelite cannot read the bytes.
    """
    import json

    from treelite import frontend

    with tempfile.NamedTemporaryFile(suffix=".bst") as f:
        f.write(data)
        f.flush()
        model = frontend.load_xgboost_model_legacy_binary(f.name)
    dumped = json.loads(model.dump_as_json(pretty_print=False))
    found = _OBJECTIVE.search(data[:4096])
    if found is None:
        raise Unconvertible("the model names no objective XGBoost still has")
    return json.dumps(_learner(dumped, found.group(1).decode())).encode()


def _learner(model: dict, objective: str) -> dict:
    import xgboost

    transform = model["postprocessor"]
    if transform not in _FROM_MARGIN:
        raise Unconvertible(f"its output transform {transform!r} has no XGBoost objective")
    num_class = model["num_class"][0]
    base = {_FROM_MARGIN[transform](m) for m in model["base_scores"]}
    if len(base) != 1:
        raise Unconvertible("it has a base score per class, which old releases never wrote")
    trees = [_tree(n, tree, model["num_feature"]) for n, tree in enumerate(model["trees"])]
    per_round = max(num_class, 1)
    return {
        "learner": {
            "attributes": {},
            "feature_names": [],
            "feature_types": [],
            "gradient_booster": {
                "name": "gbtree",
                "model": {
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": str(len(trees))},
                    "iteration_indptr": list(range(0, len(trees) + 1, per_round)),
                    "tree_info": [int(c) for c in model["class_id"]],
                    "trees": trees,
                },
            },
            "learner_model_param": {
                "base_score": repr(base.pop()),
                "boost_from_average": "0",
                "num_class": str(num_class if num_class > 1 else 0),
                "num_feature": str(model["num_feature"]),
                "num_target": "1",
            },
            "objective": _objective(objective, num_class),
        },
        "version": [int(p) for p in xgboost.__version__.split(".")[:3] if p.isdigit()],
    }


def _objective(name: str, num_class: int) -> dict:
    """The objective's JSON: its name (reg:linear is reg:squarederror now) and parameters."""
    name = "reg:squarederror" if name == "reg:linear" else name
    if name.startswith("multi:"):
        return {"name": name, "softmax_multiclass_param": {"num_class": str(num_class)}}
    return {"name": name, **_OBJECTIVE_PARAMS.get(name, {})}


def _tree(index: int, tree: dict, num_feature: int) -> dict:
    """One tree as XGBoost's JSON lays it out: arrays indexed by node id."""
    size = tree["num_nodes"]
    left, right = [-1] * size, [-1] * size
    parents = [2147483647] * size
    feature, condition = [0] * size, [0.0] * size
    default_left, hessian, gain = [0] * size, [0.0] * size, [0.0] * size
    for node in tree["nodes"]:
        at = node["node_id"]
        hessian[at] = node.get("sum_hess", 0.0)
        if "leaf_value" in node:
            value = node["leaf_value"]
            if isinstance(value, list):
                raise Unconvertible(f"tree {index} has a vector leaf")
            condition[at] = value
            continue
        if node["node_type"] != "numerical_test_node" or node["comparison_op"] != "<":
            raise Unconvertible(f"tree {index} has a {node['node_type']} split")
        left[at], right[at] = node["left_child"], node["right_child"]
        parents[left[at]] = parents[right[at]] = at
        feature[at], condition[at] = node["split_feature_id"], node["threshold"]
        default_left[at] = int(node["default_left"])
        gain[at] = node.get("gain", 0.0)
    return {
        "id": index,
        "tree_param": {
            "num_deleted": "0",
            "num_feature": str(num_feature),
            "num_nodes": str(size),
            "size_leaf_vector": "1",
        },
        "left_children": left,
        "right_children": right,
        "parents": parents,
        "split_indices": feature,
        "split_conditions": condition,
        "split_type": [0] * size,
        "default_left": default_left,
        "base_weights": condition,
        "loss_changes": gain,
        "sum_hessian": hessian,
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
    }


def booster(data: bytes):
    """An `xgboost.Booster` holding a binary model, carried over to JSON.

    Raises:
        ImportError: Treelite is not installed.
        Unconvertible: the model holds what the JSON model cannot carry the same way.
        Exception: Treelite or XGBoost cannot read it.
    """
    import xgboost

    loaded = xgboost.Booster()
    loaded.load_model(bytearray(to_json(data)))
    return loaded
