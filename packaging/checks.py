#!/usr/bin/env python3
"""Helpers for packaging/test.sh.

  checks.py lint-dashboards DIR RULES_OUT   structure lint of every *.json dashboard in DIR;
                                            writes every PromQL expression as a recording
                                            rule into RULES_OUT for `promtool check rules`
  checks.py metric-names FILE...            metric names used by the dashboards (*.json) and
                                            rule files (*.yml), one per line
  checks.py missing-metrics SCRAPE FILE...  names from metric-names absent from the
                                            Prometheus text exposition in SCRAPE
  checks.py env-file FILE                   the assignments systemd's EnvironmentFile= reads
                                            from FILE, as NUL-separated KEY=VALUE for `env`
  checks.py free-port                       an unused TCP port on 127.0.0.1
"""
import json
import re
import socket
import sys
from pathlib import Path

import yaml

# Grafana's built-in and dashboard variables, replaced by values that keep PromQL valid.
VARIABLE_VALUES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h",
                   "job": "mediasoup-server", "instance": "127.0.0.1:9464"}

# Metrics that the Prometheus server adds itself; they never appear in a target's scrape.
PROMETHEUS_SYNTHETIC = {"up"}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "atan2",
}


def substitute_variables(expr):
    def value(m):
        name = m.group(1) or m.group(2)
        if name not in VARIABLE_VALUES:
            raise ValueError(f"unknown dashboard variable ${name} in: {expr}")
        return VARIABLE_VALUES[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dashboard_exprs(board):
    """(where, expr) for every panel query and every query variable's selector."""
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            yield f'panel {panel.get("id")} "{panel.get("title")}"', target.get("expr", "")
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"])
            if not m:
                raise ValueError(f'variable {var["name"]}: unsupported query {var["query"]}')
            yield f'variable {var["name"]}', m.group(1)


def lint_board(path, board, errors):
    def err(msg):
        errors.append(f"{path.name}: {msg}")

    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        if key not in board:
            err(f"missing top-level key {key!r}")
    if board.get("id") not in (None,):
        err('has a fixed "id"; provisioned dashboards must leave it out (null)')
    variables = {v.get("name"): v for v in board.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err('no "datasource" variable of type datasource/prometheus')
    ids, cells = set(), {}
    for panel in board.get("panels", []):
        pid, title = panel.get("id"), panel.get("title")
        if not isinstance(pid, int) or pid in ids:
            err(f"panel {title!r}: id {pid!r} missing or duplicated")
        ids.add(pid)
        if not title:
            err(f"panel {pid}: no title")
        g = panel.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy"):
            err(f"panel {pid}: incomplete gridPos {g}")
            continue
        if g["w"] < 1 or g["h"] < 1 or g["x"] < 0 or g["y"] < 0 or g["x"] + g["w"] > 24:
            err(f"panel {pid}: gridPos {g} outside the 24-column grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    err(f"panel {pid}: overlaps panel {cells[(x, y)]} at column {x}, row {y}")
                    break
                cells[(x, y)] = pid
            else:
                continue
            break
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            err(f"panel {pid}: datasource is not the ${{datasource}} variable")
        targets = panel.get("targets") or []
        if not targets:
            err(f"panel {pid}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            err(f"panel {pid}: refIds {refs} missing or duplicated")
        for t in targets:
            if t.get("datasource", {}).get("uid") != "${datasource}":
                err(f"panel {pid} query {t.get('refId')}: datasource is not ${{datasource}}")
            if not t.get("expr"):
                err(f"panel {pid} query {t.get('refId')}: empty expr")


def lint_dashboards(directory, rules_out):
    errors, rules, uids, titles = [], [], {}, {}
    files = sorted(Path(directory).glob("*.json"))
    if not files:
        errors.append(f"no dashboards in {directory}")
    for path in files:
        board = json.loads(path.read_text())
        lint_board(path, board, errors)
        for key, seen in (("uid", uids), ("title", titles)):
            if board.get(key) in seen:
                errors.append(f"{path.name}: {key} {board.get(key)!r} also in {seen[board[key]]}")
            seen[board.get(key)] = path.name
        for n, (where, expr) in enumerate(dashboard_exprs(board)):
            rules.append({"record": f"dashboard:{path.stem.replace('-', '_')}:{n}",
                          "expr": substitute_variables(expr),
                          "labels": {"where": f"{path.name} {where}"}})
    Path(rules_out).write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]},
                                          indent=1))
    for e in errors:
        print(e, file=sys.stderr)
    print(f"{len(files)} dashboards, {len(rules)} expressions written to {rules_out}")
    return 1 if errors else 0


def names_in_expr(expr):
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)                     # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                    # range/subquery windows
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = m.group(0), expr[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def exprs_in_file(path):
    if path.suffix == ".json":
        for _, expr in dashboard_exprs(json.loads(path.read_text())):
            yield substitute_variables(expr)
    else:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield rule["expr"]


def metric_names(files):
    names = set()
    for f in files:
        for expr in exprs_in_file(Path(f)):
            names |= names_in_expr(expr)
    return sorted(names)


def missing_metrics(scrape, files):
    exposed = set()
    for line in Path(scrape).read_text().splitlines():
        if line and not line.startswith("#"):
            exposed.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    used = metric_names(files)
    missing = [n for n in used if n not in exposed and n not in PROMETHEUS_SYNTHETIC]
    print(f"{len(used)} metric names used, {len(exposed)} exposed, {len(missing)} missing")
    for n in missing:
        print(f"missing from the scrape: {n}")
    return 1 if missing else 0


def env_file(path):
    """Parses like systemd's EnvironmentFile=: KEY=VALUE lines, # and ; comments, optional
    quotes around the value, whitespace around the key and the value dropped."""
    out = []
    for n, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            sys.exit(f"{path}:{n}: not a KEY=VALUE line: {raw}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out.append(f"{key}={value}")
    sys.stdout.write("".join(a + "\0" for a in out))
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


def main(argv):
    cmd, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    if cmd == "lint-dashboards" and len(args) == 2:
        return lint_dashboards(*args)
    if cmd == "metric-names" and args:
        print("\n".join(metric_names(args)))
        return 0
    if cmd == "missing-metrics" and len(args) >= 2:
        return missing_metrics(args[0], args[1:])
    if cmd == "env-file" and len(args) == 1:
        return env_file(args[0])
    if cmd == "free-port" and not args:
        return free_port()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
