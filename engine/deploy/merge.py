"""One answer for the cluster from every replica's: /healthz lists the replicas (their node,
sessions, runtimes, load), /metrics is every replica's Prometheus text with a `replica` label,
/streams is every replica's streams with the replica that holds each."""

from __future__ import annotations

import json
from typing import Sequence

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from ..transport.errors import error_body
from .routes import Answer

JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def _json(answer: Answer) -> dict:
    try:
        data = json.loads(answer.body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def replicas(answers: Sequence[Answer]) -> list[dict]:
    """One entry per replica: where it runs, its /healthz, and what it reports to the router."""
    out = []
    for answer in answers:
        health = _json(answer) if answer.status == 200 else {"status": f"answered {answer.status}"}
        out.append({"replica": answer.replica, "node_id": answer.node_id, "node_ip": answer.node_ip,
                    **{k: v for k, v in answer.extra.items() if k != "seq"}, **health})
    return sorted(out, key=lambda r: (r["node_ip"], r["node_id"], r["replica"]))


def healthz(answers: Sequence[Answer]) -> dict:
    listed = replicas(answers)
    return {
        "status": "ok" if any(r.get("status") == "ok" for r in listed) else "unavailable",
        "replicas": listed,
        "sessions": sum(r.get("sessions", 0) for r in listed),
        "max_sessions": sum(r.get("max_sessions", 0) for r in listed),
        "viewers": sum(r.get("viewers", 0) for r in listed),
    }


def streams(answers: Sequence[Answer]) -> dict:
    out = {}
    for answer in answers:
        for name, info in _json(answer).items():
            out[name] = {**(info if isinstance(info, dict) else {}), "replica": answer.replica}
    return dict(sorted(out.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics(answers: Sequence[Answer]) -> str:
    """The replicas' Prometheus texts as one, each sample labelled with its replica."""
    families: dict[str, tuple[str, str, list[str]]] = {}  # name -> (type, help, sample lines)
    for answer in answers:
        for family in text_string_to_metric_families(answer.body.decode("utf-8", "replace")):
            kind, doc, lines = families.setdefault(family.name, (family.type, family.documentation, []))
            for sample in family.samples:
                labels = {"replica": answer.replica, **sample.labels}
                text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                lines.append(f"{sample.name}{{{text}}} {floatToGoString(sample.value)}")
    out = []
    for name, (kind, doc, lines) in families.items():
        name = f"{name}_total" if kind == "counter" else name  # as prometheus_client writes counters
        out += [f"# HELP {name} {_escape(doc)}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"


def merged(path: str, answers: Sequence[Answer]) -> tuple[int, str, bytes]:
    """(status, content type, body) of `path` for the whole cluster."""
    if path == "/healthz":
        data = healthz(answers)
        return (200 if data["replicas"] else 503), JSON, json.dumps(data).encode()
    if not answers:
        message = "no camfx replica is running yet; try again in a few seconds"
        return 503, JSON, json.dumps(error_body(message)).encode()
    if path == "/metrics":
        return 200, PROMETHEUS, metrics(answers).encode()
    return 200, JSON, json.dumps(streams(answers)).encode()
