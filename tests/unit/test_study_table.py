"""The study table of a study still under way: pending points have no figures yet."""
from harness.config.studies import load_study
from harness.store.results import ResultsStore
from harness.study import plan_study, study_table


def test_a_partly_run_study_has_a_table_with_its_pending_points(tmp_path):
    study = load_study("experiments/studies/smoke.yaml")
    store = ResultsStore(tmp_path / "s.sqlite")
    plans = plan_study(study)
    store.put_study_points(study.name, [(p.position, p.key, p.label, p.overrides) for p in plans])
    store.set_study_point(study.name, plans[0].key, "complete", None, {"accuracy": 0.9, "bits_per_inference": 64})
    table = study_table(store, study)
    assert len(table) == len(plans)
    assert list(table.status) == ["complete"] + ["pending"] * (len(plans) - 1)
    assert table.accuracy.iloc[0] == 0.9 and table.accuracy.iloc[1:].isna().all()


def test_a_field_only_some_points_override_has_every_points_value(tmp_path):
    """table1-wind overrides 'scheme' only in its centralized points: the others show their own."""
    study = load_study("experiments/studies/table1-wind.yaml")
    store = ResultsStore(tmp_path / "s.sqlite")
    plans = plan_study(study)
    store.put_study_points(study.name, [(p.position, p.key, p.label, p.overrides) for p in plans])
    for p in plans:
        scheme = "centralized" if "scheme" in p.overrides else "ours"
        store.set_study_point(study.name, p.key, "complete", None, {"scheme": scheme, "accuracy": 0.1})
    table = study_table(store, study)
    assert table.scheme.tolist() == ["ours"] * 20 + ["centralized"] * 5
