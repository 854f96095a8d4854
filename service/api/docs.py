"""/openapi.json and a plain, dependency-free /docs page rendered from it."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from service.openapi import openapi_document

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document())


def _schema_name(content: dict[str, Any] | None) -> str:
    if not content:
        return ""
    schema = content.get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).rsplit("/", 1)[-1]


@bp.get("/docs")
def docs() -> ResponseReturnValue:
    doc = openapi_document()
    rows = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            params = ", ".join(f"{escape(p['name'])} ({p['in']})" for p in op.get("parameters", []))
            body = _schema_name(op.get("requestBody", {}).get("content"))
            responses = ", ".join(
                f"{code} {escape(_schema_name(r.get('content')) or r['description'])}"
                for code, r in op["responses"].items()
            )
            rows.append(
                f"<tr><td><code>{method.upper()} {escape(path)}</code></td>"
                f"<td>{escape(op.get('summary', ''))}</td><td>{params}</td>"
                f"<td>{escape(body)}</td><td>{responses}</td></tr>"
            )
    schemas = "".join(
        f"<h3 id='{escape(name)}'>{escape(name)}</h3>"
        f"<pre>{escape(json.dumps(schema, indent=2))}</pre>"
        for name, schema in doc["components"]["schemas"].items()
    )
    html = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>trainsvc API</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:80em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;
vertical-align:top}}pre{{background:#f6f6f6;padding:.6em;overflow:auto}}</style></head>
<body><h1>trainsvc API v1</h1>
<p>{escape(doc["info"]["description"])} Every route except <code>/healthz</code>,
<code>/readyz</code>, <code>/openapi.json</code> and <code>/docs</code> needs
<code>Authorization: Bearer &lt;key&gt;</code>. Machine-readable:
<a href="/openapi.json">/openapi.json</a>.</p>
<table><tr><th>route</th><th>what</th><th>parameters</th><th>body</th><th>answers</th></tr>
{"".join(rows)}</table>
<h2>Schemas</h2>{schemas}</body></html>"""
    return Response(html, mimetype="text/html")
