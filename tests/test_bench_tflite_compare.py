"""bench.tflite_compare: the median's order-statistic interval, and two files compared round by round."""

import json

import numpy as np
import pytest
from scipy import stats

from exfuse_keras.bench import tflite_compare


def test_median_interval_takes_the_binomial_ranks():
    """n = 100: the 95% interval of the median is [x_(40), x_(61)] (P(40 <= B <= 60) = 0.965 for
    B ~ Binomial(100, 1/2); one rank narrower covers 0.943)."""
    values = np.random.default_rng(0).permutation(np.arange(100.0))
    median, low, high = tflite_compare.median_interval(values)
    assert (median, low, high) == (49.5, 39.0, 60.0)
    assert stats.binom.cdf(60, 100, 0.5) - stats.binom.cdf(39, 100, 0.5) >= 0.95
    assert stats.binom.cdf(59, 100, 0.5) - stats.binom.cdf(40, 100, 0.5) < 0.95
    # Few values: the widest interval, the extremes (coverage 1 - 2 / 2^n).
    assert tflite_compare.median_interval([3.0, 1.0, 2.0, 5.0, 4.0, 6.0])[1:] == (1.0, 6.0)


def test_compare_runs_each_file_and_reports_paired_differences(tmp_path, capsys):
    import keras

    from exfuse_keras.export import tflite

    inputs = keras.Input((32, 32, 3), batch_size=1)
    small = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))
    large = keras.Model(inputs, keras.layers.Conv2D(64, 3, padding="same")(keras.layers.Conv2D(
        64, 3, padding="same")(inputs)))
    paths = []
    for name, model in (("small", small), ("large", large)):
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(tflite.convert(model, (32, 32)))
        paths.append(str(path))
    out = tmp_path / "compare.json"
    assert tflite_compare.main([*paths, "--rounds", "30", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [f["path"] for f in result["files"]] == paths and result["rounds"] == 30
    (diff,) = result["differences"]
    low, high = diff["ci"]
    assert low <= diff["median_ms"] <= high
    assert diff["median_ms"] > 0  # two 64-channel convolutions against one of 4: the second file is slower
    # Every call's time is kept: the medians and intervals are numpy's median and the order
    # statistics of those times, each file's own and the paired differences'.
    times = np.array([f["times_ms"] for f in result["files"]])
    assert times.shape == (2, 30) and (times > 0).all()
    for f, t in zip(result["files"], times):
        assert f["median_ms"] == pytest.approx(np.median(t))
        # n = 30: P(10 <= B <= 20) = 0.957 for B ~ Binomial(30, 1/2), so [x_(10), x_(21)].
        assert f["ci"] == pytest.approx([np.sort(t)[9], np.sort(t)[20]])
    assert diff["median_ms"] == pytest.approx(np.median(times[1] - times[0]))
    assert diff["ci"] == pytest.approx([np.sort(times[1] - times[0])[9], np.sort(times[1] - times[0])[20]])
    out_text = capsys.readouterr().out
    assert "| file | median ms / call [95% CI] |" in out_text
    assert f"| {paths[1]} | {result['files'][1]['median_ms']:.2f} [" in out_text
    with pytest.raises(SystemExit):
        tflite_compare.main([paths[0], "--rounds", "30"])
