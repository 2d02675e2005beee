"""
The Autobahn WebSocket conformance suite against chanserv: every case of
``wstest -m fuzzingclient`` (framing, pings, fragmentation, UTF-8
validation, close handshakes, messages of up to 16 MiB) but 12.* and 13.*
(permessage-deflate, which chanserv never negotiates) must end OK,
NON-STRICT or INFORMATIONAL, both in behaviour and in its close.  The pytest
process runs ``scripts/ensure-autobahn-testsuite`` (a Python 2.7 virtualenv
with wstest), then starts chanserv as a child ``twistd -n chanserv`` process
serving ``bench/proj``'s echo consumer at ``/echo/`` (its reactor thread
speaks WebSocket, its worker threads run the consumer, over the in-memory
layer), with the frame, message and layer size limits raised so that no
limit closes a 9.* case; then it runs wstest as a second child process (a
Twisted client on Python 2.7) and reads its ``reports/index.json``.  By
hand, from the repository: ``.venv/bin/python
tests/e2e/test_autobahn_suite.py [--cases '9.*' ...] [--outdir DIR]``, which
prints the results, the time per case group and the failures, keeps the
HTML report (``DIR/reports/index.html``) and exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the ``tests`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.harness import REPO, TwistdProcess, free_port

ENSURE = REPO / "scripts" / "ensure-autobahn-testsuite"
PROJECT = REPO / "bench" / "proj"

#: permessage-deflate, which chanserv never negotiates.
EXCLUDE_CASES = ["12.*", "13.*"]

#: The cases wstest 25.10.1 runs with EXCLUDE_CASES left out.
EXPECTED_CASES = 301

#: The outcomes that pass; the others are FAILED, WRONG CODE, UNCLEAN,
#: FAILED BY CLIENT and UNIMPLEMENTED.
PASSING = frozenset(["OK", "NON-STRICT", "INFORMATIONAL"])

#: 9.* sends messages of up to 16 MiB; these limits sit well above that.
MAX_SIZE = "32M"
LAYER_MAX_MESSAGE_SIZE = 64 * 1024 * 1024

#: The whole run takes about half a minute on two cores.
WSTEST_TIMEOUT = 900.0
ENSURE_TIMEOUT = 1200.0

#: bench/proj's settings, with the layer's message size limit (1 MiB by
#: default: it would close 9.* cases with 1009) raised.
SETTINGS = """\
from proj.settings import *  # noqa: F403

CHANNEL_LAYERS["default"]["CONFIG"]["max_message_size"] = %d
""" % (LAYER_MAX_MESSAGE_SIZE,)


def ensure_wstest() -> str:
    """The path of wstest, installed by scripts/ensure-autobahn-testsuite if need be."""
    result = subprocess.run(
        [str(ENSURE)],
        capture_output=True,
        text=True,
        timeout=ENSURE_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(
            "%s failed (exit %d):\n%s" % (ENSURE, result.returncode, result.stderr[-4000:])
        )
    return result.stdout.strip().splitlines()[-1]


def echo_server(workdir: Path) -> TwistdProcess:
    """An unstarted chanserv serving bench/proj's echo, limits raised for the suite."""
    (workdir / "autobahn_settings.py").write_text(SETTINGS)
    return TwistdProcess(
        PROJECT,
        "autobahn_settings",
        args=[
            "--pythonpath=%s" % (workdir,),
            "-b",
            "127.0.0.1",
            "--max-ws-message-size=" + MAX_SIZE,
            "--max-ws-frame-size=" + MAX_SIZE,
        ],
        port=free_port(),
        env={"CHANNEL_LAYER": "memory"},
    )


def run_wstest(wstest: str, port: int, workdir: Path, cases: Sequence[str] = ("*",)) -> Path:
    """Run ``wstest -m fuzzingclient`` against ``/echo/`` on ``port``; returns the report folder."""
    reports = workdir / "reports"
    spec = {
        "outdir": str(reports),
        "servers": [{"agent": "chanserv", "url": "ws://127.0.0.1:%d/echo/" % (port,)}],
        "cases": list(cases),
        "exclude-cases": EXCLUDE_CASES,
        "exclude-agent-cases": {},
    }
    (workdir / "fuzzingclient.json").write_text(json.dumps(spec, indent=2))
    log = workdir / "wstest.log"
    with log.open("wb") as out:
        code = subprocess.run(
            [wstest, "-m", "fuzzingclient", "-s", "fuzzingclient.json"],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=WSTEST_TIMEOUT,
        ).returncode
    if code != 0 or not (reports / "index.json").exists():
        raise RuntimeError(
            "wstest exited with %d:\n%s" % (code, log.read_text(errors="replace")[-4000:])
        )
    return reports


def case_key(case: str) -> list[int]:
    """``"9.1.10"`` as ``[9, 1, 10]``, to sort cases as the suite numbers them."""
    return [int(part) for part in case.split(".")]


def load_results(reports: Path) -> dict[str, dict[str, Any]]:
    """The chanserv agent's entry of ``index.json``: case id to its outcome."""
    index = json.loads((reports / "index.json").read_text())
    return dict(index["chanserv"])


def failures(reports: Path, results: dict[str, dict[str, Any]]) -> list[str]:
    """One line per failed case: its id, outcomes, description and result."""
    lines = []
    for case in sorted(results, key=case_key):
        outcome = results[case]
        if outcome["behavior"] in PASSING and outcome["behaviorClose"] in PASSING:
            continue
        detail = json.loads((reports / outcome["reportfile"]).read_text())
        lines.append(
            "%s %s/%s: %s -- %s; close: %s (code %s)"
            % (
                case,
                outcome["behavior"],
                outcome["behaviorClose"],
                re.sub(r"<[^>]+>", "", detail.get("description", "")).strip(),
                detail.get("result", ""),
                detail.get("resultClose", ""),
                outcome.get("remoteCloseCode"),
            )
        )
    return lines


def group_durations(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Seconds spent per top-level case group (``"9"``, ...), as wstest measured them."""
    totals: dict[str, float] = defaultdict(float)
    for case, outcome in results.items():
        totals[case.split(".")[0]] += outcome.get("duration", 0) / 1000.0
    return dict(sorted(totals.items(), key=lambda item: int(item[0])))


def test_every_autobahn_case_passes_against_the_echo_consumer(tmp_path: Path) -> None:
    """Every Autobahn fuzzingclient case but permessage-deflate's ends OK, NON-STRICT or INFORMATIONAL."""
    wstest = ensure_wstest()
    with echo_server(tmp_path) as server:
        assert server.port is not None
        reports = run_wstest(wstest, server.port, tmp_path)
        assert server.stop() == 0
    results = load_results(reports)
    failed = failures(reports, results)
    assert not failed, "%d of %d Autobahn cases failed:\n%s" % (
        len(failed),
        len(results),
        "\n".join(failed),
    )
    assert len(results) == EXPECTED_CASES
    assert "Traceback" not in server.output()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite by hand (see the module docstring); 1 when a case failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "--cases",
        action="append",
        help="a case pattern such as 9.* or 5.1 (repeatable; default: all)",
    )
    parser.add_argument(
        "--outdir",
        type=Path,
        help="folder for the spec, wstest's log and reports/ (default: a new temporary one)",
    )
    args = parser.parse_args(argv)
    workdir = args.outdir or Path(tempfile.mkdtemp(prefix="chanserv-autobahn-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    wstest = ensure_wstest()
    started = time.monotonic()
    with echo_server(workdir) as server:
        assert server.port is not None
        reports = run_wstest(wstest, server.port, workdir, args.cases or ["*"])
        server.stop()
        (workdir / "chanserv.log").write_text(server.output())
    elapsed = time.monotonic() - started
    results = load_results(reports)
    outcomes = Counter("%s/%s" % (o["behavior"], o["behaviorClose"]) for o in results.values())
    print("%d cases in %.1f s: %s" % (len(results), elapsed, dict(outcomes)))
    print(
        "seconds per group: %s"
        % ", ".join("%s.*=%.1f" % item for item in group_durations(results).items())
    )
    failed = failures(reports, results)
    for line in failed:
        print("FAILED " + line)
    print("report: %s" % (reports / "index.html",))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
