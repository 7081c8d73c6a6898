"""The `modelshield` command. One module per command group; each exposes `register(subparsers)`.

Exit codes (the contract scripts rely on): 0 success / all allowed, 1 something blocked,
2 usage or I/O error. Errors print one clear line to stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from modelshield import __version__
from modelshield.aws import unreachable
from modelshield.cli import (
    commands_access,
    commands_audit,
    commands_crypto,
    commands_dashboard,
    commands_dlq,
    commands_groups,
    commands_jobs,
    commands_keys,
    commands_scan,
    commands_stack,
)
from modelshield.errors import ModelShieldError, StorageError

COMMAND_MODULES = (
    commands_scan,
    commands_crypto,
    commands_groups,
    commands_stack,
    commands_access,
    commands_audit,
    commands_keys,
    commands_dashboard,
    commands_jobs,
    commands_dlq,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelshield",
        description="Scan, gate and envelope-encrypt ML model artifacts without executing them.",
    )
    parser.add_argument("--version", action="version", version=f"modelshield {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ModelShieldError as exc:
        print(f"modelshield: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (BotoCoreError, ClientError) as exc:  # an AWS call no command mapped: still one line
        error = unreachable(exc) or StorageError(f"AWS call failed: {exc}")
        print(f"modelshield: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("modelshield: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `modelshield ... | head`: the reader left; not an error worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
