"""The web stack alone: one Flask JSON route, for predict_http to serve with the same gunicorn
configuration as the API and measure side by side (the floor our predict route is held to).

    gunicorn -c python:service.gunicorn_conf 'benchmarks.bare_app:create_app()'
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue


def create_app() -> Flask:
    """A Flask app whose one route reads a JSON body and answers a JSON object of the same size
    as a one-row prediction."""
    app = Flask(__name__)

    @app.post("/echo")
    def echo() -> ResponseReturnValue:
        rows = request.get_json()["instances"]
        return jsonify({"model_id": "bare", "predictions": [0] * len(rows), "probabilities": rows})

    return app
