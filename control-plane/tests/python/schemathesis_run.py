"""Runs Schemathesis against a running Keygate control plane's /openapi.json, once per
credential, with the `not_a_server_error` check, and prints one JSON summary line.

Driven by control-plane/tests/openapi_fuzz.rs, which starts the real `keygate serve` binary.

Usage:
    schemathesis_run.py BASE_URL REPORT_DIR MAX_EXAMPLES SEED
The passes come from the environment variable KEYGATE_ST_PASSES, a JSON list of
    {"label": "...", "token": "...", "include_path_regex": "..." (optional)}
so that no credential appears on a command line.

Exit codes: 0 the runs completed (the summary says whether anything failed),
3 Schemathesis is not importable (install control-plane/tests/python/requirements.txt).
"""

import json
import os
import subprocess
import sys


def run_pass(base_url, report_dir, max_examples, seed, p):
    label = p["label"]
    report = os.path.join(report_dir, f"{label}.json")
    log_path = os.path.join(report_dir, f"{label}.log")
    args = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{base_url}/openapi.json",
        "--header", f"Authorization: Bearer {p['token']}",
        "--checks", "not_a_server_error",
        "--max-examples", str(max_examples),
        "--seed", str(seed),
        # One worker: Schemathesis' coverage phase hits a CPython 3.11 `ast` race with more.
        "--workers", "1",
        # A key-set long poll may wait up to 30 s.
        "--request-timeout", "35",
        "--report", "json", "--report-json-path", report,
        "--output-sanitize", "true",
        "--no-color",
    ]
    if p.get("include_path_regex"):
        args += ["--include-path-regex", p["include_path_regex"]]
    with open(log_path, "w", encoding="utf-8") as log:
        # Run inside the report directory, so Schemathesis' and Hypothesis' local state
        # (.hypothesis/, schemathesis-report/) stays out of the repository.
        proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, check=False,
                              cwd=report_dir)
    result = {"label": label, "exit_code": proc.returncode, "log": log_path}
    try:
        with open(report, encoding="utf-8") as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        result["report_error"] = str(e)
        return result
    result.update({
        "schemathesis_version": r.get("schemathesis_version"),
        "complete": r.get("complete"),
        "operations_tested": r["operations"]["tested"],
        "operations_errored": r["operations"]["errored"],
        "phases": {k: v.get("status") for k, v in r.get("phases", {}).items()},
        "generated": r["test_cases"]["generated"],
        "with_failures": r["test_cases"]["with_failures"],
        "errored": r["test_cases"]["errored"],
        "failures": json.dumps(r.get("failures", []))[:4000],
        "errors": json.dumps(r.get("errors", []))[:4000],
    })
    return result


def main(argv):
    try:
        import schemathesis  # noqa: F401
    except ImportError as e:
        print(json.dumps({"error": f"schemathesis is not importable: {e}"}))
        return 3
    base_url, report_dir, max_examples, seed = argv[1], argv[2], int(argv[3]), int(argv[4])
    passes = json.loads(os.environ["KEYGATE_ST_PASSES"])
    results = [run_pass(base_url, report_dir, max_examples, seed, p) for p in passes]
    print(json.dumps({"schemathesis_version": schemathesis.__version__, "passes": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
