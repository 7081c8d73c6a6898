"""`modelshield dlq list|redrive`: the scan events that failed every attempt, and sending them back.

Each one already has an ERROR verdict saying what failed and what to do; once that is fixed, `redrive`
puts the events back on the scan queue (they are scanned again, with fresh retries).
"""

from __future__ import annotations

from typing import Any

from modelshield import config, dlq, wiring
from modelshield.cli.output import add_format_flag, print_json, print_table
from modelshield.errors import ConfigError, StackNotRunning
from modelshield.local import stack as local


def register(sub: Any) -> None:
    parser = sub.add_parser("dlq", help="list or redrive scan events in the dead-letter queue")
    actions = parser.add_subparsers(dest="dlq_command", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="the events that failed every attempt")
    listing.add_argument("--limit", type=int, default=1000)
    add_format_flag(listing)
    listing.set_defaults(handler=cmd_list)
    again = actions.add_parser("redrive", help="send them back to the scan queue (after fixing the cause)")
    again.add_argument("--limit", type=int, default=None, help="at most this many (default: all)")
    add_format_flag(again)
    again.set_defaults(handler=cmd_redrive)


def _settings() -> config.DlqSettings:
    local.use_local_stack_if_running()
    try:
        return config.load(config.DlqSettings)
    except ConfigError as exc:
        raise StackNotRunning(
            f"no queues to talk to: start the local stack (`modelshield local up`) or set them: {exc}"
        ) from None


def _rows(letters: list[dlq.DeadLetter]) -> list[list[str]]:
    return [
        [
            d.message_id,
            f"{d.sent_at:%Y-%m-%d %H:%M:%S}" if d.sent_at else "-",
            str(d.receive_count),
            f"s3://{d.bucket}/{d.key}" if d.key else "(not an object event)",
            d.version_id or "-",
            d.trigger,
        ]
        for d in letters
    ]


HEADERS = ["message", "sent (UTC)", "receives", "object", "version", "trigger"]


def cmd_list(args: Any) -> int:
    settings = _settings()
    letters = dlq.list_dead_letters(wiring.client("sqs"), settings.dead_letter_queue_url, limit=args.limit)
    if args.format == "json":
        print_json({"dead_letters": dlq.as_json(letters)})
    elif not letters:
        print("the dead-letter queue is empty")
    else:
        print_table(HEADERS, _rows(letters))
        print(
            "each has an ERROR verdict saying what failed (`modelshield verdict KEY`); "
            "fix that, then `modelshield dlq redrive`"
        )
    return 0


def cmd_redrive(args: Any) -> int:
    settings = _settings()
    moved = dlq.redrive(
        wiring.client("sqs"),
        settings.dead_letter_queue_url,
        settings.scan_queue_url,
        rescan_queue_url=settings.rescan_queue_url,
        limit=args.limit,
    )
    if args.format == "json":
        print_json({"redriven": dlq.as_json(moved), "count": len(moved)})
    else:
        print(f"sent {len(moved)} event(s) back to the queue each came from (scan or rescan)")
        if moved:
            print_table(HEADERS, _rows(moved))
    return 0
