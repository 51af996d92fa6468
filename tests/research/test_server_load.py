"""The server load test, small: a real server process, concurrent httpx clients and libretranslatepy,
every answer checked against the single-request translation of its input."""

import pytest

from research.server_load import format_load_report, load_test
from tests.toy_translation import save_toy_model, toy_pairs


@pytest.mark.slow  # a server process started and stopped
def test_the_load_test_reports_both_phases_with_no_errors_and_equal_answers(tmp_path):
    folder = tmp_path / "model"
    save_toy_model(folder)
    texts = [source for source, _ in toy_pairs(30, seed=4)]
    report = load_test(
        str(folder), texts, "en", "es", clients=4, libretranslate_clients=1, requests=20,
        seconds=60, server_flags=["--num_beams", "2", "--max_wait_ms", "20"],
    )  # fmt: skip
    assert report["one_at_a_time"]["requests"] == 20
    assert report["concurrent"]["requests"] == 20
    assert report["concurrent"]["libretranslatepy_requests"] >= 1
    assert report["errors"] == 0 and report["mismatches"] == 0 and report["unanswered"] == 0
    assert report["server_exit_code"] == 0
    assert report["mean_lines_per_engine_call"] >= 1
    table = format_load_report(report)
    assert "| one at a time | 20 |" in table and "errors 0" in table
