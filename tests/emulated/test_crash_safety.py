"""SIGKILL `hilbench run` and `hilbench study` at random moments (seeded), rerun each time: every
(run, node, sample) row and every study point exactly once, the database intact, no emulator left
behind. scripts/crash_safety.py records the same with >= 20 kills per command."""
from tests.crash_safety import kill_at_random_moments


def test_killed_runs_resume_without_lost_or_duplicated_rows(tmp_path):
    db = tmp_path / "killed.sqlite"
    report = kill_at_random_moments(
        ["run", "experiments/smoke.yaml", "--samples", "60"], db, "inferences",
        ("run_id", "node", "sample"), expected_rows=240, kills=2, seed=11, window_s=(0.5, 8.0))
    assert report.ok, report
    assert report.kills == 2, report


def test_killed_studies_resume_without_lost_or_duplicated_points(tmp_path):
    db = tmp_path / "study.sqlite"
    report = kill_at_random_moments(
        ["study", "experiments/studies/smoke.yaml", "--workers", "1"], db,
        "(SELECT * FROM study_points WHERE status = 'complete')", ("study", "point_key"),
        expected_rows=5, kills=1, seed=12, window_s=(2.0, 20.0))
    assert report.ok, report
    assert report.kills == 1, report
