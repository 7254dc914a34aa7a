"""Time-series datasets: the input codes, the split, the classes, the real irish-wind data from
Debian's r-cran-gstat (as scripts/setup.sh extracts it), users' CSV files and the experiment
fields that select them."""
import numpy as np
import pytest

from harness.core.errors import ConfigError, DatasetError
from quant_models.datasets import load_dataset, load_experiment_dataset
from quant_models.experiment import SeriesSpec, parse_experiment
from quant_models.partition import make_partition, parse_site_groups
from quant_models.series import (bin_targets, chronological_split, load_series, quantile_edges, quantize_series,
                                 windows)

WIND = {"name": "w", "dataset": "irish-wind", "partition": "sites:VAL|SHA|DUB|MAL",
        "encoder": {"lstm": [40, 9]}, "code": {"values": 36, "bits": 4}}


def test_quantize_series_by_hand():
    # mean 10, std 2, 3 stds: z = (x - 10) / 6, code = rne(z * 128), saturating at int8
    x = np.array([10.0, 13.0, 7.0, 10.0 + 6 * 127 / 128, 100.0, -100.0, 10.0 + 6 * 0.5 / 128, 10.0 + 6 * 1.5 / 128])
    codes = quantize_series(x, 10.0, 2.0, 3.0)
    assert codes.dtype == np.int8
    assert codes.tolist() == [0, 64, -64, 127, 127, -128, 0, 2]  # 0.5 and 1.5 round half to even
    per_site = quantize_series(np.array([[1.0, 10.0], [3.0, 30.0]]), np.array([2.0, 20.0]), np.array([1.0, 10.0]), 1.0)
    assert per_site.tolist() == [[-128, -128], [127, 127]]
    assert quantize_series(np.array([5.0]), 5.0, 0.0, 3.0).tolist() == [0]  # a constant site: std 0


def test_quantile_classes_by_hand():
    edges = quantile_edges(np.arange(1.0, 11.0), 4)  # quartiles of 1..10
    assert edges.tolist() == [3.25, 5.5, 7.75]
    assert bin_targets(np.array([1.0, 3.25, 5.0, 7.76, 99.0]), edges).tolist() == [0, 1, 1, 3, 3]
    labels = bin_targets(np.arange(1.0, 11.0), edges)
    assert np.bincount(labels).tolist() == [3, 2, 2, 3]


@pytest.mark.parametrize("steps,window,horizon,test_fraction", [(100, 10, 1, 0.2), (57, 5, 3, 0.3), (30, 2, 1, 0.5)])
def test_chronological_split_never_shares_a_reading(steps, window, horizon, test_fraction):
    split = chronological_split(steps, window, horizon, test_fraction)
    train_used = {int(s + k) for s in split.train_starts for k in range(window + horizon)}
    test_used = {int(s + k) for s in split.test_starts for k in range(window + horizon)}
    assert not train_used & test_used
    assert max(train_used) == split.split_index - 1 and min(test_used) == split.split_index
    assert max(test_used) == steps - 1  # every reading after the split is used
    dropped = (steps - window - horizon + 1) - len(split.train_starts) - len(split.test_starts)
    assert dropped == window + horizon - 1


def test_windows_are_site_rows():
    values = np.arange(20.0).reshape(10, 2)  # site 0: even numbers, site 1: odd
    w = windows(values, np.array([0, 3]), 4)
    assert w.shape == (2, 2, 4)
    assert w[1].tolist() == [[6, 8, 10, 12], [7, 9, 11, 13]]


def test_irish_wind_is_the_real_gstat_data():
    series = load_series("irish-wind")
    assert series.values.shape == (6574, 12)
    assert series.sites[:4] == ("RPT", "VAL", "ROS", "KIL") and "MAL" in series.sites
    assert series.times[0] == "1961-01-01" and series.times[-1] == "1978-12-31"
    assert series.values[0, 1] == 14.96 and np.isfinite(series.values).all()  # VAL on 1 Jan 1961
    assert "r-cran-gstat" in series.source


def test_wind_dataset_for_an_experiment():
    exp = parse_experiment(WIND, "w.yaml")
    ds = load_experiment_dataset(exp)
    assert ds.train_x.dtype == np.int8 and ds.train_x.shape[1:] == (4, 50)
    assert len(ds.train_y) + len(ds.test_y) == 6574 - 50 - 1 + 1 - 50  # windows less the dropped ones
    assert ds.classes == 20 and set(np.unique(ds.train_y)) == set(range(20))
    assert np.bincount(ds.train_y).min() >= 0.8 * len(ds.train_y) / 20  # quantile classes: balanced
    assert "target VAL" in ds.source and "chronological" in ds.split
    # row 2 of the samples is DUB: the views of partition sites:VAL|SHA|DUB|MAL follow the rows
    series = load_series("irish-wind")
    dub = series.values[:, series.sites.index("DUB")]
    assert np.corrcoef(ds.train_x[:, 2, 0], dub[:len(ds.train_x)])[0, 1] > 0.999
    views = make_partition(exp.partition, ds.image_shape).views(ds.test_x[:3])
    assert [v.shape for v in views] == [(3, 1, 50)] * 4
    assert load_experiment_dataset(exp).fingerprint == ds.fingerprint


def test_sites_per_node_and_target_and_window():
    exp = parse_experiment({**WIND, "partition": "sites:VAL+SHA|MAL", "code": {"values": 18, "bits": 2},
                            "series": {"window": 10, "target": "DUB", "classes": 5}}, "w.yaml")
    ds = load_experiment_dataset(exp)
    assert ds.image_shape == (3, 10) and ds.classes == 5
    assert [w.height for w in make_partition(exp.partition, ds.image_shape).windows] == [2, 1]
    with pytest.raises(DatasetError, match=r"w.yaml: field 'series.target': no site 'XYZ'"):
        load_experiment_dataset(parse_experiment({**WIND, "series": {"target": "XYZ"}}, "w.yaml"))
    with pytest.raises(DatasetError, match=r"w.yaml: field 'partition': no site 'NOPE' in irish-wind; its sites: RPT"):
        load_experiment_dataset(parse_experiment({**WIND, "partition": "sites:VAL|NOPE"}, "w.yaml"))


def test_csv_series(tmp_path):
    path = tmp_path / "lake.csv"
    rows = ["time,a,b"] + [f"2020-01-{d:02d},{d},{100 - d}" for d in range(1, 31)]
    path.write_text("\n".join(rows) + "\n")
    exp = parse_experiment({**WIND, "dataset": f"csv:{path}", "partition": "sites:b|a", "code": {"values": 18, "bits": 4},
                            "series": {"window": 4, "classes": 3, "test_fraction": 0.3}}, "lake.yaml")
    ds = load_experiment_dataset(exp)
    series = load_series(f"csv:{path}")
    assert series.sites == ("a", "b") and series.times[0] == "2020-01-01"
    # rows in node order (b first); b falls over time, a rises
    assert (np.diff(ds.train_x[0, 0].astype(int)) < 0).all() and (np.diff(ds.train_x[0, 1].astype(int)) > 0).all()
    assert ds.train_y.tolist() == sorted(ds.train_y.tolist(), reverse=True)  # the target (b) falls


def test_bad_csv_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("t,a,b\n1,2,3\n2,x,4\n")
    with pytest.raises(DatasetError, match=r"row 3, column 'a': 'x' is not a number"):
        load_series(f"csv:{bad}")
    bad.write_text("t,a\n1,2\n2,\n")
    with pytest.raises(DatasetError, match=r"row 3, column 'a'.*every site needs a reading"):
        load_series(f"csv:{bad}")
    with pytest.raises(DatasetError, match="is not a file"):
        load_series(f"csv:{tmp_path}/missing.csv")
    bad.write_text("t\n1\n2\n")
    with pytest.raises(DatasetError, match="needs a time column and at least one site"):
        load_series(f"csv:{bad}")


def test_missing_wind_data_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("HILBENCH_WIND_RDA", str(tmp_path / "wind.rda"))
    with pytest.raises(DatasetError, match=r"w.yaml: field 'dataset': dataset 'irish-wind' needs wind.rda from the "
                                           r"Debian package r-cran-gstat .*scripts/setup.sh.*apt-get download r-cran-gstat"):
        load_experiment_dataset(parse_experiment(WIND, "w.yaml"))
    (tmp_path / "wind.rda").write_bytes(b"not an rda file")
    with pytest.raises(DatasetError, match="cannot read the gstat wind data"):
        load_series("irish-wind")


def test_too_short_a_series(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("t,a\n" + "".join(f"{i},{i}\n" for i in range(30)))
    exp = parse_experiment({**WIND, "dataset": f"csv:{path}", "partition": "sites:a", "code": {"values": 9, "bits": 4}},
                           "s.yaml")
    with pytest.raises(DatasetError, match=r"s.yaml: .* 30 time steps: too few for windows of 50"):
        load_experiment_dataset(exp)


def test_site_partitions():
    assert parse_site_groups("sites:A|B+C") == [["A"], ["B", "C"]] and parse_site_groups("quadrants") is None
    p = make_partition("sites:A|B+C|D", (4, 7))
    assert [(w.top, w.height, w.width) for w in p.windows] == [(0, 1, 7), (1, 2, 7), (3, 1, 7)]
    with pytest.raises(ConfigError, match="names 2 sites but the samples have 4 rows"):
        make_partition("sites:A|B", (4, 7))
    with pytest.raises(ConfigError, match="a site may belong to one node only"):
        parse_site_groups("sites:A|A")
    with pytest.raises(ConfigError, match="name each node's sites"):
        parse_site_groups("sites:A||B")


def test_series_schema_errors():
    def err(data, match):
        with pytest.raises(ConfigError, match=match):
            parse_experiment(data, "e.yaml").check_shape(4, 20)

    err({**WIND, "encoder": {}}, r"e.yaml: .*'irish-wind' is a time series: give an LSTM encoder")
    err({**WIND, "dataset": "mnist"}, r"field 'encoder.lstm': LSTM encoders read time series")
    err({**WIND, "encoder": {"lstm": [40, 9], "layers": [{"maxpool": 2}]}}, r"field 'encoder'.*has no layers")
    err({**WIND, "code": {"values": 36, "bits": 1}}, r"field 'code.bits'.*q = 1 is not supported")
    err({**WIND, "code": {"values": 40, "bits": 4}}, r"field 'code.values': each of the 4 nodes sends .* 4 x 9 = 36 \(got 40\)")
    err({**WIND, "encoder": {"lstm": [0]}}, r"field 'encoder.lstm'.*at least 1")
    err({**WIND, "series": {"window": 1}}, r"field 'series.window'")
    err({**WIND, "scheme": "autoencoder"}, r"field 'scheme'.*no time-series form")
    with pytest.raises(DatasetError, match="field 'series': 'mnist' is an image dataset"):
        load_experiment_dataset(parse_experiment({"name": "m", "dataset": "mnist", "code": {"values": 64, "bits": 4},
                                                  "series": {"window": 5}}, "m.yaml"))
    with pytest.raises(DatasetError, match="is a time-series dataset"):
        load_dataset("irish-wind")
    assert SeriesSpec().window == 50 and SeriesSpec().classes == 20


@pytest.mark.parametrize("name", ["wind-lstm", "wind-lstm-smoke"])
def test_shipped_wind_experiments(name):
    from quant_models.experiment import load_experiment

    exp = load_experiment(f"experiments/{name}.yaml")
    ds = load_experiment_dataset(exp)
    partition = exp.partition_for(ds.image_shape, ds.classes)
    assert exp.name == name and partition.nodes == 4 and exp.encoder.lstm is not None
    assert exp.code.values == 4 * exp.encoder.lstm[-1] == 36
