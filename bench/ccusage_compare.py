"""`telemetry-tray report daily --json` against `ccusage daily --json --offline`
on the same Claude Code transcripts, same run (issue 13).

    .venv/bin/python bench/ccusage_compare.py [--mb 100] [--seed 13] [--runs 3]
                                              [--work DIR] [--ccusage latest,20.0.24,18.0.11]

1. Generates ``--mb`` MB of transcripts and imports them with the real app
   (bench/first_start_bench.py), or reuses ``--work DIR`` left by
   ``first_start_bench.py --keep DIR``.
2. Installs each ccusage version asked for with npm into the temp dir
   (HOME and the npm cache there too); a version that does not install or
   run is skipped with a message.
3. Times, ``--runs`` times each (median), with HOME, CLAUDE_CONFIG_DIR,
   TELEMETRY_TRAY_HOME and XDG_* in the temp dir and days in UTC for both:
   ours: ``python -m tray_app report daily --json`` against the built
   database, and once a cold ``usage rebuild`` (every derived table emptied
   and derived again from raw_traces) for fairness; ccusage: ``ccusage daily
   --json --offline --timezone UTC``.
4. Compares input, output, cache-creation and cache-read tokens per day and
   in total, and cost; explains output differences from the files themselves:
   per request (``message.id`` + ``requestId``) the largest ``output_tokens``
   of its lines (what we keep) and that of the first line seen (a partial
   streamed count, when the first line is the thinking block).
Prints a JSON line with everything and the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import first_start_bench as fsb  # noqa: E402

FIELDS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
CC_FIELDS = {"input_tokens": "inputTokens", "output_tokens": "outputTokens",
             "cache_creation_tokens": "cacheCreationTokens", "cache_read_tokens": "cacheReadTokens"}


def timed(cmd: list[str], env: dict[str, str], runs: int, warmup: bool = True) -> tuple[list[float], str]:
    """Wall times of ``runs`` fresh processes, after one untimed run (both sides
    then read from the page cache, and our first open after the app's stop
    does not pay its checkpoint)."""
    times, out = [], ""
    for i in range(runs + int(warmup)):
        t = time.perf_counter()
        p = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=3600)
        if i or not warmup:
            times.append(round(time.perf_counter() - t, 3))
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-1500:]}")
        out = p.stdout
    return times, out


def install_ccusage(work: Path, version: str, env: dict[str, str]) -> Path | None:
    d = work / "npm" / version
    d.mkdir(parents=True, exist_ok=True)
    (d / "package.json").write_text('{"private": true}\n')
    spec = "ccusage" if version == "latest" else f"ccusage@{version}"
    npm_env = dict(env, npm_config_cache=str(work / "npm-cache"), npm_config_update_notifier="false")
    p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", spec], cwd=str(d), env=npm_env,
                       capture_output=True, text=True, timeout=600)
    binary = d / "node_modules" / ".bin" / "ccusage"
    if p.returncode != 0 or not binary.exists():
        print(f"ccusage {version}: npm install failed, skipped: {(p.stderr or p.stdout)[-500:]}", flush=True)
        return None
    v = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, timeout=120)
    if v.returncode != 0:
        print(f"ccusage {version}: installed but does not run here, skipped: "
              f"{(v.stderr or v.stdout).strip()[-300:]}", flush=True)
        return None
    print(f"ccusage {version}: installed ({v.stdout.strip()})", flush=True)
    return binary


def scan_files(projects: Path) -> dict[str, Any]:
    """From the files themselves: per request the largest output_tokens of its
    lines and the output_tokens of its first line (files in path order)."""
    first: dict[tuple[Any, Any], dict[str, Any]] = {}
    best: dict[tuple[Any, Any], int] = {}
    for path in sorted(projects.rglob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if b'"assistant"' not in line:
                continue
            d = json.loads(line)
            msg = d.get("message") or {}
            u = msg.get("usage")
            if d.get("type") != "assistant" or not u or msg.get("model") == "<synthetic>":
                continue
            key = (msg.get("id"), d.get("requestId"))
            first.setdefault(key, u)
            best[key] = max(best.get(key, 0), u["output_tokens"])
    out = {"requests": len(first),
           "input_tokens": sum(u["input_tokens"] for u in first.values()),
           "cache_creation_tokens": sum(u["cache_creation_input_tokens"] for u in first.values()),
           "cache_read_tokens": sum(u["cache_read_input_tokens"] for u in first.values()),
           "output_tokens_largest": sum(best.values()),
           "output_tokens_first_line": sum(u["output_tokens"] for u in first.values()),
           "requests_with_partial_first_line": sum(1 for k, u in first.items() if u["output_tokens"] < best[k])}
    return out


def ours_days(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["date"]: {**{f: d[f] for f in FIELDS}, "cost": d["cost_usd"]} for d in rep["days"]}


def cc_days(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {(d.get("date") or d.get("period")): {**{f: d[CC_FIELDS[f]] for f in FIELDS}, "cost": d.get("totalCost")}
            for d in rep["daily"]}


def compare(ours: dict[str, dict[str, Any]], cc: dict[str, dict[str, Any]]) -> dict[str, Any]:
    days = sorted(set(ours) | set(cc))
    res: dict[str, Any] = {"days_ours": len(ours), "days_ccusage": len(cc),
                           "days_only_one_side": [d for d in days if (d in ours) != (d in cc)]}
    for f in (*FIELDS, "cost"):
        o = sum((ours.get(d) or {}).get(f) or 0 for d in days)
        c = sum((cc.get(d) or {}).get(f) or 0 for d in days)
        differ = [d for d in days if (ours.get(d) or {}).get(f) != (cc.get(d) or {}).get(f)]
        if f == "cost":
            differ = [d for d in days if abs(((ours.get(d) or {}).get(f) or 0) - ((cc.get(d) or {}).get(f) or 0))
                      > 1e-6]
            res[f] = {"ours": round(o, 4), "ccusage": round(c, 4), "ratio": round(o / c, 4) if c else None,
                      "days_differing": len(differ)}
        else:
            res[f] = {"ours": o, "ccusage": c, "equal": o == c, "days_differing": len(differ)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", metavar="DIR", help="reuse a first_start_bench.py --keep DIR (not removed)")
    ap.add_argument("--ccusage", default="latest,20.0.24,18.0.11",
                    help="ccusage versions to install and compare (comma-separated; 'latest' = npm's)")
    args = ap.parse_args()
    from benchutil import machine

    if shutil.which("npm") is None or shutil.which("node") is None:
        print("node/npm not found: the ccusage comparison is skipped")
        return
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ccusage-compare-"))
    result: dict[str, Any] = {"bench": "ccusage_compare", "machine": machine(),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        if not args.work:
            imp = fsb.run(work, args.mb, args.seed)
            imp.pop("_truth")
            result["import"] = {k: v for k, v in imp.items() if k != "samples"}
        env = fsb.isolated_env(work)
        projects = work / "claude" / "projects"
        size = sum(p.stat().st_size for p in projects.rglob("*.jsonl"))
        result["mb"] = round(size / 1e6, 1)
        print(f"data: {size / 1e6:.1f} MB of transcripts in {projects}", flush=True)

        py = [sys.executable, "-m", "tray_app"]
        report_cmd = [*py, "report", "daily", "--json", "--timezone", "UTC", "--platform", "claude_code"]
        t_report, out = timed(report_cmd, env, args.runs)
        ours = json.loads(out)
        t_rebuild, _ = timed([*py, "usage", "rebuild"], env, 1, warmup=False)
        t_after, out2 = timed(report_cmd, env, 1, warmup=False)
        assert json.loads(out2)["totals"] == ours["totals"], "rebuild changed the totals"
        result["ours"] = {"report_daily_s": t_report, "report_daily_median_s": statistics.median(t_report),
                          "usage_rebuild_cold_s": t_rebuild[0], "report_after_rebuild_s": t_after[0],
                          "totals": {f: ours["totals"][f] for f in (*FIELDS, "requests", "cost_usd")},
                          "pricing": ours["pricing"], "unpriced": ours.get("unpriced")}
        print(f"ours: report daily --json {t_report} s (median {statistics.median(t_report)} s); "
              f"cold usage rebuild {t_rebuild[0]} s; totals {result['ours']['totals']}", flush=True)
        t = time.perf_counter()
        result["files"] = scan_files(projects)
        print(f"from the files ({time.perf_counter() - t:.1f} s): {result['files']}", flush=True)

        result["ccusage"] = {}
        for version in [v.strip() for v in args.ccusage.split(",") if v.strip()]:
            binary = install_ccusage(work, version, env)
            if binary is None:
                result["ccusage"][version] = "skipped"
                continue
            cmd = [str(binary), "daily", "--json", "--offline", "--timezone", "UTC"]
            try:
                t_cc, out = timed(cmd, env, args.runs)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"ccusage {version}: failed, skipped: {exc}", flush=True)
                result["ccusage"][version] = f"failed: {exc}"[:300]
                continue
            cc = json.loads(out)
            ver = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True).stdout.strip()
            cmp = compare(ours_days(ours), cc_days(cc))
            med = statistics.median(t_cc)
            entry = {"version": ver, "daily_s": t_cc, "daily_median_s": med,
                     "speedup_report": round(med / statistics.median(t_report), 1),
                     "speedup_vs_cold_rebuild_plus_report": round(med / (t_rebuild[0] + t_after[0]), 2),
                     "compare": cmp}
            result["ccusage"][version] = entry
            print(f"ccusage {version} ({ver}): daily --json --offline {t_cc} s (median {med} s); ccusage time / ours: "
                  f"{entry['speedup_report']}x (report), "
                  f"{entry['speedup_vs_cold_rebuild_plus_report']}x (cold rebuild + report)", flush=True)
            for f in (*FIELDS, "cost"):
                print(f"   {f:>22}: ours {cmp[f]['ours']:>16,} ccusage {cmp[f]['ccusage']:>16,} "
                      + (f"equal={cmp[f]['equal']}" if f != "cost" else f"ratio={cmp[f]['ratio']}")
                      + f" days differing {cmp[f]['days_differing']}/{max(cmp['days_ours'], cmp['days_ccusage'])}",
                      flush=True)
            if cmp["days_only_one_side"]:
                print(f"   days on one side only: {cmp['days_only_one_side']}")
        print(json.dumps(result))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
