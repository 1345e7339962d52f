"""Logging: a library is quiet until the application configures output."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap

from inferpool.logs import NAMESPACE, capture_events, configure_logging, get_logger


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_unconfigured_debug_and_info_events_print_nothing() -> None:
    done = run_python("""
        from inferpool.logs import get_logger
        log = get_logger("producer")
        log.debug("producer.submitted", id="a")
        log.info("producer.started", id="b")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_unconfigured_warnings_still_reach_stderr() -> None:
    done = run_python("""
        from inferpool.logs import get_logger
        get_logger("producer").warning("producer.submit_failed", count=3)
    """)
    assert done.stdout == ""
    assert "producer.submit_failed" in done.stderr


def test_configured_events_are_json_lines_with_component_and_level() -> None:
    done = run_python("""
        import sys
        from inferpool.logs import configure_logging, get_logger
        configure_logging("info", "json")
        log = get_logger("worker.batcher", worker="w1")
        log.debug("batch.hidden")
        log.info("batch.done", size=4)
    """)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["batch.done"]
    assert lines[0]["component"] == "worker.batcher" and lines[0]["worker"] == "w1"
    assert lines[0]["level"] == "info" and lines[0]["size"] == 4 and "timestamp" in lines[0]


def test_configure_logging_leaves_structlog_global_configuration_alone() -> None:
    done = run_python("""
        import structlog
        structlog.configure(processors=[structlog.processors.JSONRenderer()])
        before = structlog.get_config()["processors"]
        from inferpool.logs import configure_logging
        configure_logging("debug", "console")
        assert structlog.get_config()["processors"] is before
        print("same")
    """)
    assert done.stdout.strip() == "same", done.stderr


def test_capture_events_collects_event_dicts() -> None:
    log = get_logger("test.capture")
    with capture_events() as events:
        log.debug("one", n=1)
        log.info("two")
    assert [(event["event"], event.get("n")) for event in events] == [("one", 1), ("two", None)]


def test_exceptions_are_rendered() -> None:
    stream = io.StringIO()
    root = logging.getLogger(NAMESPACE)
    state = (list(root.handlers), root.level, root.propagate)
    configure_logging("info", "json", stream=stream)
    try:
        try:
            raise ValueError("broken")
        except ValueError:
            get_logger("test.exc").exception("thing.failed")
        event = json.loads(stream.getvalue().splitlines()[-1])
        assert event["event"] == "thing.failed" and "ValueError: broken" in event["exception"]
    finally:
        root.handlers[:], root.level, root.propagate = state


def test_client_commands_show_only_warnings_unless_asked_for_debug() -> None:
    import argparse

    from inferpool_app.cli import _log_level

    def level(command: str, configured: str) -> str:
        return _log_level(argparse.Namespace(command=command), configured)

    assert level("submit", "info") == "warning" and level("result", "info") == "warning"
    assert level("submit", "debug") == "debug" and level("submit", "error") == "error"
    assert level("worker", "info") == "info" and level("up", "info") == "info"
