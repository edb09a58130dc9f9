"""``meridian key hash``: the ``sha256:`` digest of an API key, for the config.

The key is read from stdin (or prompted for without echo on a terminal), never
taken as an argument: an argument stays in the shell's history and shows in
``ps``. The digest is of the key as the gateway sees it in ``Authorization:
Bearer …`` (surrounding whitespace dropped), so a key file's final newline does
not matter.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import sys
from typing import Any

_FROM_STDIN = 'printf %s "$KEY" | meridian key hash'


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    key = sub.add_parser("key", help="tenant API keys")
    verbs = key.add_subparsers(dest="verb", required=True, metavar="VERB")
    hash_ = verbs.add_parser(
        "hash", help="print the sha256: digest of a key read from stdin (prompted on a terminal)"
    )
    hash_.add_argument("given", nargs="?", help=argparse.SUPPRESS)  # refused, see run_hash
    hash_.set_defaults(func=run_hash)


def _read() -> bytes:
    if sys.stdin.isatty():
        try:
            return getpass.getpass("API key (not echoed): ").encode("utf-8", "surrogateescape")
        except EOFError:
            return b""
    return sys.stdin.buffer.read()


def digest_line(key: bytes) -> str:
    """``sha256:<hex>`` of ``key`` without its surrounding whitespace; ValueError when
    there is no key or more than one word."""
    key = key.strip()
    if not key:
        raise ValueError(f"no key on stdin; e.g. {_FROM_STDIN}")
    if len(key.split()) > 1:
        raise ValueError("the input holds more than one word; give one key, alone")
    return "sha256:" + hashlib.sha256(key).hexdigest()


def run_hash(args: argparse.Namespace) -> int:
    if args.given is not None:  # never echoed: it is probably the key
        print(
            "meridian: key hash takes the key on stdin, never as an argument (the shell "
            f"keeps arguments in its history): {_FROM_STDIN}",
            file=sys.stderr,
        )
        return 2
    try:
        line = digest_line(_read())
    except ValueError as exc:
        print(f"meridian: {exc}", file=sys.stderr)
        return 1
    print(line)
    return 0
