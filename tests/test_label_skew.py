"""benchmarks/label_skew: the clients' label skew under the app's Dirichlet partitions."""

from __future__ import annotations

from benchmarks.label_skew import skew

DIGITS = ["data.source='builtin' data.dataset='digits' data.train-size=0 model.img-size=28"]


def test_skew_grows_as_alpha_shrinks_and_an_alpha_flwr_datasets_cannot_draw_is_recorded():
    # Prepare / Execute: 10 clients of sklearn's 1,437 training digits (10 classes)
    near_iid = skew([*DIGITS, "data.dirichlet.min-partition-size=10"], 1000.0, 1, 10)
    skewed = skew([*DIGITS, "data.dirichlet.min-partition-size=10"], 0.05, 1, 10)
    impossible = skew([*DIGITS, "data.dirichlet.min-partition-size=500"], 0.05, 1, 10)
    # Assert: every image on some client; the pool's majority share ~0.1; near IID little
    # skew, α = 0.05 most of the headroom; 10 × 500 > 1,437 images cannot be drawn
    assert 0.09 < near_iid["pool_majority_share"] < 0.12
    assert near_iid["skew_of_headroom"] < 0.1 and near_iid["classes_per_client"] == 10
    assert skewed["skew_of_headroom"] > 0.5 and skewed["classes_per_client"] < 5
    assert skewed["min_size"] >= 10
    assert "error" in impossible and "majority_share" not in impossible
