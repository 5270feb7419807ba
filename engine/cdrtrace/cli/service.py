"""The trace service's commands: serve (FastAGI and HTTP listeners) and token."""
from __future__ import annotations

from ..errors import CdrTraceError
from ..parsing.timezones import format_utc
from .common import emit, open_store

CREATE_ONLY = (("token_name", "--name"), ("role", "--role"), ("from_file", "--from-file"),
               ("expires_days", "--expires-days"))


def cmd_token(args):
    if args.action != "create":             # said, not left unread
        given = [flag for attr, flag in CREATE_ONLY if getattr(args, attr) is not None]
        if given:
            raise CdrTraceError(f"token {args.action} takes no {', '.join(given)} "
                                "(only token create does)")
    if args.action == "list" and args.name is not None:
        raise CdrTraceError("token list takes no name")
    if args.action == "create" and args.name is not None:
        raise CdrTraceError(f"token create takes its name as --name {args.name} (the name "
                            "alone is token revoke's)")
    store = open_store(args)
    if args.action == "create":
        if not args.token_name or not args.role:
            raise CdrTraceError("token create needs --name and --role")
        given = None
        if args.from_file:              # never on the command line: ps would show it
            try:
                with open(args.from_file, encoding="utf-8") as f:
                    given = f.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise CdrTraceError(f"cannot read the token in {args.from_file}: {exc}") from None
        token = store.tokens.create(args.token_name, args.role, operator=args.operator,
                                    token=given, days=args.expires_days)
        if given is not None:
            emit(args, {"name": args.token_name, "role": args.role, "installed": True},
                 f"token {args.token_name} installed (the store keeps only its hash)")
        else:
            emit(args, {"name": args.token_name, "role": args.role, "token": token},
                 f"{token}\n(shown once: the store keeps only its hash)")
    elif args.action == "revoke":
        if not args.name:
            raise CdrTraceError("token revoke needs the token's name")
        store.tokens.revoke(args.name, operator=args.operator)
        emit(args, {"revoked": args.name}, f"token {args.name} revoked")
    else:
        tokens = store.tokens.listed()
        emit(args, tokens, "\n".join(
            f"{t['name']:<24} {t['role']:<9} created {format_utc(t['created_us'])}"
            + (f"  expires {format_utc(t['expires_us'])}" if t["expires_us"] else "")
            + (f"  revoked {format_utc(t['revoked_us'])}" if t["revoked_us"] else "")
            for t in tokens) or "no tokens")


def cmd_serve(args):
    from ..service import server

    server.run(args)
