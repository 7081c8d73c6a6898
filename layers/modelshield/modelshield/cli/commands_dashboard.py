"""`modelshield dashboard`: where the compliance dashboard is (the local stack's, or DASHBOARD_URL)."""

from __future__ import annotations

import webbrowser
from typing import Any

from modelshield import config
from modelshield.cli.output import add_format_flag, print_json
from modelshield.errors import StackNotRunning
from modelshield.local import stack as local


def register(sub: Any) -> None:
    parser = sub.add_parser("dashboard", help="print (or open) the compliance dashboard's URL")
    parser.add_argument("--open", action="store_true", help="open it in a web browser as well")
    add_format_flag(parser)
    parser.set_defaults(handler=cmd_dashboard)


def dashboard_url() -> str:
    """DASHBOARD_URL when set (a deployed stack's DashboardUrl output), else the running local stack's."""
    url = config.load(config.DashboardTarget).url
    if url:
        return url
    state = local.read_state()
    if state is not None and state.get("outputs", {}).get("dashboard_url"):
        return str(state["outputs"]["dashboard_url"])
    raise StackNotRunning(
        "no dashboard to show: start the local stack with `modelshield local up`, "
        "or set DASHBOARD_URL to a deployed stack's DashboardUrl output"
    )


def cmd_dashboard(args: Any) -> int:
    url = dashboard_url()
    if args.format == "json":
        print_json({"url": url, "metrics": f"{url.rstrip('/')}/metrics.json"})
    else:
        print(url)
    if args.open:
        webbrowser.open(url)
    return 0
