"""The benchmark scripts import and parse their arguments (they are run by `make bench`, never
by the test suite)."""

import types

import pytest

from bench import celery_baseline, history, load, polling, run, turns
from bench.client import latency_summary, percentile

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8100/api/v1/turns/3
  2 threads and 8 connections
  Latency Distribution
     50%  820.00us
     75%    1.10ms
     90%    1.52ms
     99%    3.01ms
  12345 requests in 5.00s, 9.1MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   2469.00
Transfer/sec:      1.82MB
"""


@pytest.mark.parametrize("module", [turns, polling, history, celery_baseline, run])
def test_scripts_answer_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_run_defaults_cover_the_issue():
    args = run.parse_args([])
    assert args.mode == "both"
    assert args.clients == [8, 32]
    assert args.connections == [8, 64]
    assert args.sizes == [10, 10_000, 1_000_000]


def test_wrk_output_is_parsed():
    result = load.parse_wrk(WRK_OUTPUT)
    assert result["requests_per_s"] == 2469.0
    assert result["requests"] == 12345
    assert result["errors"] == 3
    assert result["latency"] == {"p50_ms": 0.82, "p90_ms": 1.52, "p99_ms": 3.01}


def test_percentiles():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    summary = latency_summary([0.001] * 99 + [0.1])
    assert summary["n"] == 100
    assert summary["p50_ms"] == 1.0
    assert summary["max_ms"] == 100.0


def test_targets_are_ratios_to_the_same_run():
    args = run.parse_args(["--connections", "8"])
    rps = {"requests_per_s": 600.0}
    results = {
        "baseline": {"write_round_trip": {"p50_ms": 2.0}, "write_tasks_per_s": 500.0},
        "latency": {run.LONG_POLL: {"latency": {"p50_ms": 5.0}}},
        "throughput": {8: {"turns_per_s": 90.0}},
        "polling": {"pk": {8: {"requests_per_s": 1000.0}}, "200": {8: rps}, "304": {8: rps}},
        "history": {
            10: {"first": {"p50_ms": 2.0, "p99_ms": 3.0}},
            1_000_000: {"first": {"p50_ms": 3.5, "p99_ms": 12.0}},
        },
    }
    met = run.check_targets(results, args)["met"]
    # 5 ms <= 3 x 2 ms; 90/s < 20% of 500/s; 600 >= 60% of 1000; p99 12 ms and 1.75x miss.
    assert met == {"latency": True, "throughput": False, "polling": True, "history": False}
    assert run.check_targets({"baseline": results["baseline"]}, args)["met"] == {}
    # Measured between the latency rounds, the round trip is the latency's yardstick: 5 > 3 x 1.
    results["latency"][run.LONG_POLL]["baseline_write_round_trip"] = {"p50_ms": 1.0}
    assert run.check_targets(results, args)["met"]["latency"] is False


def test_latency_rounds_each_start_with_the_yardstick(monkeypatch):
    calls = []
    monkeypatch.setattr(turns, "Client", lambda *args: types.SimpleNamespace(close=lambda: None))
    monkeypatch.setattr(turns, "create_session", lambda client, agent_id: 1)
    monkeypatch.setattr(
        turns, "run_turn", lambda *args, **kwargs: calls.append("turn") or (0.01, "completed", 1)
    )
    result = turns.measure_latency(
        "http://x",
        "t",
        1,
        turns=7,
        poll="longpoll",
        warmup=0,
        rounds=3,
        before_round=lambda: calls.append("yardstick"),
    )
    assert calls == ["yardstick", *["turn"] * 3, "yardstick", *["turn"] * 3, "yardstick", "turn"]
    assert result["latency"]["n"] == 7 and result["failed"] == 0


def test_the_benchmark_database_is_created_when_missing(settings):
    from sqlalchemy import text

    from models.db import make_engine, normalize_url

    if not settings.database_url.startswith("postgresql"):
        pytest.skip("creates a PostgreSQL database")
    url = normalize_url(settings.database_url).set(database="roomcast_bench_check")
    server = make_engine(url.set(database="postgres").render_as_string(False), pool_size=1)
    drop = text("DROP DATABASE IF EXISTS roomcast_bench_check")
    try:
        with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(drop)
        for _ in range(2):  # creates it, then finds it
            run.ensure_postgres_database(url.render_as_string(False))
        created = make_engine(url.render_as_string(False), pool_size=1)
        with created.connect() as conn:
            assert conn.scalar(text("SELECT current_database()")) == "roomcast_bench_check"
        created.dispose()
    finally:
        with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(drop)
        server.dispose()
