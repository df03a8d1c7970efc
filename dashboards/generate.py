#!/usr/bin/env python3
"""Writes the Grafana dashboards of mediasoup-server as provisioning-ready JSON.

The JSON files next to this script are its output and are committed; edit this script,
then run `python3 dashboards/generate.py` (packaging/test.sh fails when the committed
JSON differs from what this script writes, see `--check`).

Every panel queries the data source chosen in the `datasource` variable, filtered by the
`job` and `instance` variables, so the same files work with any Prometheus data source name.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job="$job",instance=~"$instance"'
TAG = "mediasoup-server"


def sel(extra=""):
    """Label matchers for the selected job/instances, plus `extra` matchers."""
    return "{" + SEL + ("," + extra if extra else "") + "}"


def rate(metric, extra="", by=None, window="$__rate_interval", fn="rate"):
    inner = f"{fn}({metric}{sel(extra)}[{window}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, hist, by="le", extra=""):
    return f"histogram_quantile({q}, {rate(hist + '_bucket', extra, by)})"


def mean(hist, by, extra=""):
    return f"{rate(hist + '_sum', extra, by)} / {rate(hist + '_count', extra, by)}"


def target(expr, legend="", instant=False):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


class Board:
    """Lays panels out left to right in rows of 24 grid units and numbers them."""

    def __init__(self, uid, title, description):
        self.uid, self.title, self.description = uid, title, description
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0

    def _place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def panel(self, kind, title, description, targets, w=12, h=8, unit="short",
              options=None, defaults=None):
        refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        field_defaults = {"unit": unit}
        field_defaults.update(defaults or {})
        self.panels.append({
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "targets": [dict(t, refId=refs[i]) for i, t in enumerate(targets)],
            "fieldConfig": {"defaults": field_defaults, "overrides": []},
            "options": options or {},
        })

    def timeseries(self, title, description, targets, unit="short", w=12, h=8, **kw):
        opts = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"}}
        self.panel("timeseries", title, description, targets, w, h, unit, opts,
                   dict({"custom": {"lineWidth": 1, "fillOpacity": 10}}, **kw))

    def stat(self, title, description, targets, unit="short", w=4, h=4, mappings=None,
             thresholds=None, text_mode="auto"):
        defaults = {"mappings": mappings or []}
        if thresholds:
            defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
            defaults["color"] = {"mode": "thresholds"}
        opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background" if thresholds else "value", "graphMode": "none",
                "textMode": text_mode, "justifyMode": "auto", "orientation": "auto"}
        self.panel("stat", title, description, targets, w, h, unit, opts, defaults)

    def bargauge(self, title, description, targets, unit="short", w=12, h=8):
        opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True}
        self.panel("bargauge", title, description, targets, w, h, unit, opts)

    def to_json(self):
        for i, p in enumerate(self.panels, start=1):
            p["id"] = i
        instance_query = f'label_values(mediasoup_server_build_info{{job="$job"}}, instance)'
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": [TAG],
            "editable": True,
            "graphTooltip": 1,
            "refresh": "30s",
            "schemaVersion": 39,
            "time": {"from": "now-6h", "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "version": 1,
            "links": [{"type": "dashboards", "tags": [TAG], "title": "mediasoup-server",
                       "asDropdown": False, "includeVars": True, "keepTime": True}],
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard"}]},
            "templating": {"list": [
                {"name": "datasource", "label": "Data source", "type": "datasource",
                 "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
                 "regex": "", "includeAll": False, "multi": False},
                {"name": "job", "label": "Job", "type": "query", "datasource": DS,
                 "query": "label_values(mediasoup_server_build_info, job)",
                 "definition": "label_values(mediasoup_server_build_info, job)",
                 "current": {}, "hide": 0, "refresh": 2, "sort": 1, "regex": "",
                 "includeAll": False, "multi": False},
                {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,
                 "query": instance_query, "definition": instance_query,
                 "current": {}, "hide": 0, "refresh": 2, "sort": 1, "regex": "",
                 "includeAll": True, "allValue": ".+", "multi": True},
            ]},
            "panels": self.panels,
        }


UP_DOWN = [{"type": "value", "options": {
    "0": {"text": "DOWN", "color": "red", "index": 0},
    "1": {"text": "UP", "color": "green", "index": 1}}}]
READY = [{"type": "value", "options": {
    "0": {"text": "NOT READY", "color": "red", "index": 0},
    "1": {"text": "READY", "color": "green", "index": 1}}}]
RED_GREEN = [{"color": "red", "value": None}, {"color": "green", "value": 1}]
FUNNEL = ["socket_opened", "rtp_capabilities", "transports_created", "ice_connected",
          "dtls_connected", "first_media"]


def overview():
    b = Board("mediasoup-server-overview", "mediasoup-server / Service overview",
              "Is the SFU up and serving: health, rooms and peers, the join funnel, "
              "signaling errors and latency.")
    b.row("Health")
    b.stat("Up", "Prometheus could scrape the metrics endpoint.",
           [target(f"up{sel()}", "{{instance}}")], mappings=UP_DOWN, thresholds=RED_GREEN)
    b.stat("Readiness", "GET /readyz state: workers alive and answering, listeners bound.",
           [target(f"mediasoup_server_ready{sel()}", "{{instance}}")], mappings=READY,
           thresholds=RED_GREEN)
    b.stat("Workers alive", "mediasoup workers alive out of the configured number.",
           [target(f"sum(mediasoup_server_workers_alive{sel()})", "alive"),
            target(f"sum(mediasoup_server_workers_configured{sel()})", "configured")])
    b.stat("Worker deaths", "Workers that died in the selected time range.",
           [target(rate("mediasoup_server_worker_deaths_total", window="$__range",
                        fn="increase"), "deaths")],
           thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])
    b.stat("Uptime", "Time since the server process started.",
           [target(f"time() - process_start_time_seconds{sel()}", "{{instance}}")], unit="s")
    b.stat("Version", "Running server version (build_info).",
           [target(f"mediasoup_server_build_info{sel()}", "{{version}}", instant=True)],
           text_mode="name")

    b.row("Load")
    b.timeseries("Rooms and peers", "Open rooms and connected peers.",
                 [target(f"sum(mediasoup_server_rooms{sel()})", "rooms"),
                  target(f"sum(mediasoup_server_peers{sel()})", "peers")])
    b.timeseries("Transports, producers, consumers",
                 "WebRTC transports by direction; producers and consumers by media kind.",
                 [target(f"sum by (direction) (mediasoup_server_transports{sel()})",
                         "transports {{direction}}"),
                  target(f"sum by (kind) (mediasoup_server_producers{sel()})",
                         "producers {{kind}}"),
                  target(f"sum by (kind) (mediasoup_server_consumers{sel()})",
                         "consumers {{kind}}")])

    b.row("Joins")
    b.bargauge("Join funnel (selected range)",
               "How many joins reached each stage, from the WebSocket opening to the first "
               "media packet. A drop between two stages shows where joins get stuck.",
               [target(rate("mediasoup_server_join_funnel_total", f'stage="{s}"',
                            window="$__range", fn="increase"), s) for s in FUNNEL])
    b.timeseries("Join failures by reason", "Failed joins per second, by reason.",
                 [target(rate("mediasoup_server_join_failures_total", by="reason"),
                         "{{reason}}")], unit="ops")
    b.timeseries("Join failure ratio", "Failed joins divided by opened signaling sockets.",
                 [target(rate("mediasoup_server_join_failures_total") + " / " +
                         rate("mediasoup_server_join_funnel_total", 'stage="socket_opened"'),
                         "failures / joins")], unit="percentunit")
    b.timeseries("DTLS connect time", "From transport creation to DTLS connected.",
                 [target(quantile(0.5, "mediasoup_server_dtls_connect_duration_seconds"), "p50"),
                  target(quantile(0.95, "mediasoup_server_dtls_connect_duration_seconds"),
                         "p95")], unit="s")

    b.row("Signaling")
    b.timeseries("Requests by type", "Signaling requests per second, by request type.",
                 [target(rate("mediasoup_server_signaling_requests_total", by="type"),
                         "{{type}}")], unit="reqps")
    b.timeseries("Request errors by type", "Signaling requests answered with an error.",
                 [target(rate("mediasoup_server_signaling_requests_total", 'outcome="error"',
                              by="type"), "{{type}}")], unit="reqps")
    b.timeseries("Request error ratio", "Share of signaling requests answered with an error.",
                 [target(rate("mediasoup_server_signaling_requests_total", 'outcome="error"') +
                         " / " + rate("mediasoup_server_signaling_requests_total"), "errors")],
                 unit="percentunit")
    b.timeseries("Request latency", "Signaling request duration over all types.",
                 [target(quantile(q, "mediasoup_server_signaling_request_duration_seconds"),
                         f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)], unit="s")
    b.timeseries("Request latency p95 by type", "95th percentile duration per request type.",
                 [target(quantile(0.95, "mediasoup_server_signaling_request_duration_seconds",
                                  by="type, le"), "{{type}}")], unit="s")
    b.timeseries("Dropped bus events", "Events a telemetry sink could not keep up with.",
                 [target(rate("mediasoup_server_bus_events_dropped_total", by="sink"),
                         "{{sink}}")], unit="ops")
    return b


def media_quality():
    b = Board("mediasoup-server-media", "mediasoup-server / Media quality",
              "How good the routed media is: mediasoup scores, packet loss, round-trip "
              "time, bitrate and RTCP feedback.")
    b.row("Scores (0 = unusable, 10 = perfect)")
    for side, what in (("producer", "media the server receives from senders"),
                       ("consumer", "media the server forwards to receivers")):
        hist = f"mediasoup_server_{side}_score"
        b.timeseries(f"{side.capitalize()} score, mean", f"Mean score of {what}.",
                     [target(mean(hist, "kind"), "{{kind}}")], min=0, max=10)
        b.timeseries(f"{side.capitalize()} score, worst 10%",
                     f"10th percentile score of {what}: 10% of samples are at or below it.",
                     [target(quantile(0.1, hist, "kind, le"), "{{kind}}")], min=0, max=10)

    b.row("Network")
    loss = "mediasoup_server_packet_loss_ratio"
    b.timeseries("Packet loss", "Fraction of packets lost, by media kind.",
                 [target(mean(loss, "kind"), "mean {{kind}}"),
                  target(quantile(0.95, loss, "kind, le"), "p95 {{kind}}")],
                 unit="percentunit", min=0)
    rtt = "mediasoup_server_rtt_seconds"
    b.timeseries("Round-trip time", "RTT between the server and the peers.",
                 [target(quantile(0.5, rtt), "p50"), target(quantile(0.95, rtt), "p95")],
                 unit="s", min=0)

    b.row("Bitrate")
    b.timeseries("Bitrate", "Media bitrate in (from senders) and out (to receivers), by kind.",
                 [target("8 * " + rate("mediasoup_server_media_bytes_total",
                                       by="direction, kind"), "{{direction}} {{kind}}")],
                 unit="bps", min=0)
    b.timeseries("Fan-out ratio", "Outgoing divided by incoming media bytes: roughly the "
                 "number of receivers per sender.",
                 [target(rate("mediasoup_server_media_bytes_total", 'direction="out"', by="kind") +
                         " / " +
                         rate("mediasoup_server_media_bytes_total", 'direction="in"', by="kind"),
                         "{{kind}}")], min=0)

    b.row("RTCP feedback")
    b.timeseries("NACK, PLI, FIR", "Retransmission requests (NACK) and keyframe requests "
                 "(PLI, FIR) per second.",
                 [target(rate("mediasoup_server_rtcp_feedback_total", by="type, kind"),
                         "{{type}} {{kind}}")], unit="ops")
    b.timeseries("Keyframe requests per video consumer",
                 "PLI+FIR per second divided by video consumers. Rising values mean "
                 "receivers keep losing the picture.",
                 [target(rate("mediasoup_server_rtcp_feedback_total", 'type=~"pli|fir",kind="video"') +
                         " / sum(mediasoup_server_consumers" + sel('kind="video"') + ")",
                         "keyframe requests")], unit="ops")
    return b


def capacity():
    b = Board("mediasoup-server-capacity", "mediasoup-server / Capacity",
              "How much headroom is left: CPU and memory of the process (workers run "
              "inside it), objects per worker and worker responsiveness.")
    b.row("Process")
    b.timeseries("CPU", "CPU time per second used by the process, workers included "
                 "(1 = one full core).",
                 [target(f"rate(process_cpu_seconds_total{sel()}[$__rate_interval])",
                         "{{instance}}")], unit="short", min=0)
    b.timeseries("Resident memory", "Resident set size of the process.",
                 [target(f"process_resident_memory_bytes{sel()}", "{{instance}}")],
                 unit="bytes", min=0)
    b.timeseries("Open file descriptors", "Sockets and files open, against the process "
                 "limit (the unit sets LimitNOFILE=65536).",
                 [target(f"process_open_fds{sel()}", "open {{instance}}"),
                  target(f"process_max_fds{sel()}", "limit {{instance}}")], min=0)
    b.timeseries("CPU per peer", "CPU cores used per connected peer, for sizing hosts.",
                 [target(f"sum by (instance) (rate(process_cpu_seconds_total{sel()}[$__rate_interval])) / "
                         f"sum by (instance) (mediasoup_server_peers{sel()})", "{{instance}}")],
                 min=0)

    b.row("Workers")
    b.timeseries("Workers alive", "Alive against configured mediasoup workers.",
                 [target(f"sum(mediasoup_server_workers_alive{sel()})", "alive"),
                  target(f"sum(mediasoup_server_workers_configured{sel()})", "configured")],
                 min=0)
    b.timeseries("Rooms per worker", "Rooms (routers) placed on each worker.",
                 [target(f"sum by (worker) (mediasoup_server_worker_rooms{sel()})",
                         "worker {{worker}}")], min=0)
    b.timeseries("Transports per worker", "WebRTC transports on each worker.",
                 [target(f"sum by (worker) (mediasoup_server_worker_transports{sel()})",
                         "worker {{worker}}")], min=0)
    wreq = "mediasoup_server_worker_probe_duration_seconds"
    b.timeseries("Worker request latency p99", "99th percentile time a worker takes to "
                 "answer the periodic health probe. A busy worker answers late.",
                 [target(quantile(0.99, wreq, "worker, le"), "worker {{worker}}")],
                 unit="s", min=0)
    b.timeseries("Worker request latency, mean", "Mean health probe duration per worker.",
                 [target(mean(wreq, "worker"), "worker {{worker}}")], unit="s", min=0)

    b.row("Recording")
    b.timeseries("Recordings", "Recording files being written (one per recorded microphone; "
                 "README, \"Recording\") and the disk throughput they take.",
                 [target(f"sum by (instance) (mediasoup_server_recordings_active{sel()})",
                         "files {{instance}}"),
                  target(rate("mediasoup_server_recording_bytes_total", by="instance"),
                         "bytes/s {{instance}}")], min=0)
    b.timeseries("Recording errors and drops", "Rooms whose recording stopped on a write "
                 "error, and audio packets left out because the disk fell behind (alert "
                 "MediasoupRecordingFailing). Calls are unaffected by either.",
                 [target(rate("mediasoup_server_recording_write_errors_total", by="instance",
                              fn="increase"), "rooms stopped {{instance}}"),
                  target(rate("mediasoup_server_recording_packets_dropped_total", by="instance",
                              fn="increase"), "packets dropped {{instance}}")], min=0)
    return b


BOARDS = {"mediasoup-server-overview.json": overview,
          "mediasoup-server-media-quality.json": media_quality,
          "mediasoup-server-capacity.json": capacity}


def render(build):
    return json.dumps(build().to_json(), indent=2, sort_keys=False) + "\n"


def main(argv):
    check = "--check" in argv[1:]
    stale = []
    for name, build in BOARDS.items():
        path = HERE / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("dashboards out of date: " + ", ".join(stale) +
              "; run python3 dashboards/generate.py and commit the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
