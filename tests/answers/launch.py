"""``auditfed`` with the answers' routes and commands wired in, for the tests.

Until the lead wires ``answer_routes.router`` into ``api/app.py`` and
``answers.register(app)`` into ``cli/main.py``, the tests run the CLI (and
``auditfed serve``) through this launcher; once wired, it adds nothing. It also gives
the node a principal directory from ``AUDITFED_TEST_DIRECTORY`` (JSON of the
``[directory]`` table) when the node has none.
"""

from __future__ import annotations

import json
import os

from auditfed.cli.answers import register

from auditfed.api import answer_routes
from auditfed.api import server as server_module
from auditfed.cli import main as cli_main
from auditfed.identity.directory import Directory

_create_app = server_module.create_app


def create_app(node, **kwargs):
    app = _create_app(node, **kwargs)
    if not any(getattr(route, "path", None) == "/v1/traces/{trace_id}" for route in app.routes):
        app.include_router(answer_routes.router)
    config = os.environ.get("AUDITFED_TEST_DIRECTORY")
    if config and getattr(node, "directory", None) is None:
        node.directory = Directory.from_config(json.loads(config))
    return app


server_module.create_app = create_app
register(cli_main.app)
cli_main.main()
