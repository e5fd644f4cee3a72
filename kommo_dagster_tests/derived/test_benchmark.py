"""The derived tables' benchmark runs (small) and reports each step."""

from benchmarks import activity, derived


def test_the_benchmark_times_every_write_and_view(capsys):
    assert derived.main(["--leads", "300"]) == 0
    out = capsys.readouterr().out
    for step in ("lead_custom_field_values, the month", "lead_status_changes", "pipeline_funnel"):
        assert step in out
    assert "% of it" in out


def test_the_activity_benchmark_times_every_rebuild(capsys):
    assert activity.main(["--leads", "300"]) == 0
    out = capsys.readouterr().out
    for step in ("chat_response_times", "calls", "manager_activity_daily", "% of it"):
        assert step in out
