"""``dxv state init|seed``, ``dxv adjudicate``, ``dxv audit verify|access|prune-access``: the state store
from the command line. The store URL is ``--url``, else ``$DXV_STATE_URL``, else the
SQLite file ``data/state/dxv.db``."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich.console import Console

from models.errors import DxvError

_out = Console()


class AuditBrokenError(DxvError):
    code = "audit.chain_broken"


def register(commands: Any) -> None:
    state = commands.add_parser("state", help="the state store: migrate, load plans, seed from files")
    sub = state.add_subparsers(dest="state_command", required=True)
    init = sub.add_parser("init", help="apply the migrations and load the plans in configs/plans")
    init.add_argument("--url", default=None)
    init.add_argument("--plans", type=Path, default=None, help="folder of plan YAML files")
    init.set_defaults(handler=_init)
    seed = sub.add_parser("seed", help="load providers, members, baselines and claim history from a YAML/JSON file")
    seed.add_argument("file", type=Path)
    seed.add_argument("--url", default=None)
    seed.set_defaults(handler=_seed)

    adj = commands.add_parser("adjudicate", help="decide a claim: models, validation layer, claim-history rules, ledger, audit")
    adj.add_argument("claim", type=Path)
    adj.add_argument("--images", type=Path, default=None, help="folder holding the attached radiographs")
    adj.add_argument("--models", type=Path, default=None)
    adj.add_argument("--url", default=None)
    adj.add_argument("--json", action="store_true")
    adj.set_defaults(handler=_adjudicate)

    prov = commands.add_parser("providers", help="provider outliers")
    psub = prov.add_subparsers(dest="providers_command", required=True)
    analyse = psub.add_parser("analyse", help="batch job: metrics per provider against peers; flags route claims to review")
    analyse.add_argument("--as-of", type=dt.date.fromisoformat, required=True, help="last day of the window (YYYY-MM-DD)")
    analyse.add_argument("--config", type=Path, default=None, help="outlier settings YAML (default configs/rules/outliers.yaml)")
    analyse.add_argument("--url", default=None)
    analyse.set_defaults(handler=_providers)

    keys = commands.add_parser("keys", help="API keys: roles and tenants")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kcreate = ksub.add_parser("create", help="create a key (shown once)")
    kcreate.add_argument("--tenant", required=True)
    kcreate.add_argument("--role", choices=["adjudicator", "reviewer", "admin"], required=True)
    kcreate.add_argument("--label", default="")
    kcreate.add_argument("--expires-in-days", type=_positive_days, default=None, help="valid this long (default: until revoked)")
    kcreate.add_argument("--url", default=None)
    kcreate.set_defaults(handler=_keys_create)
    krotate = ksub.add_parser("rotate", help="a new key for a key's holder; the old one keeps working for an overlap")
    krotate.add_argument("key_id")
    krotate.add_argument("--overlap-hours", type=_overlap_hours, default=24.0,
                         help="how long the old key still works, 0 to 2160 (default 24)")
    krotate.add_argument("--url", default=None)
    krotate.set_defaults(handler=_keys_rotate)
    klist = ksub.add_parser("list", help="key ids, tenants, roles (never the secrets)")
    klist.add_argument("--tenant", default=None)
    klist.add_argument("--url", default=None)
    klist.set_defaults(handler=_keys_list)
    krevoke = ksub.add_parser("revoke", help="revoke a key by its id")
    krevoke.add_argument("key_id")
    krevoke.add_argument("--url", default=None)
    krevoke.set_defaults(handler=_keys_revoke)

    rules = commands.add_parser("rules", help="rule tables and plans")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    rdiff = rsub.add_parser("diff", help="what changed between two versions of a rule table or plan")
    rdiff.add_argument("old", type=Path)
    rdiff.add_argument("new", type=Path)
    rdiff.set_defaults(handler=_rules_diff)

    aud = commands.add_parser("audit", help="the audit trail")
    asub = aud.add_subparsers(dest="audit_command", required=True)
    verify = asub.add_parser("verify", help="check the hash chain: edited or deleted records are reported")
    verify.add_argument("--url", default=None)
    verify.set_defaults(handler=_verify)
    access = asub.add_parser("access", help="the access log: who made which request, latest first")
    access.add_argument("--url", default=None)
    access.add_argument("--tenant", default=None)
    access.add_argument("--subject", default=None, help="requests naming this record, e.g. audit_id=7")
    access.add_argument("--request-id", default=None, help="the request an answer's X-Request-ID names")
    access.add_argument("--since", type=dt.datetime.fromisoformat, default=None, help="ISO time (UTC)")
    access.add_argument("--limit", type=int, default=50, help="at most this many (0: all)")
    access.add_argument("--jsonl", action="store_true", help="one JSON object per line (an export), not a table")
    access.set_defaults(handler=_access)
    prune = asub.add_parser("prune-access", help="delete access-log records older than a time (retention)")
    prune.add_argument("--url", default=None)
    cutoff = prune.add_mutually_exclusive_group(required=True)
    cutoff.add_argument("--before", type=dt.datetime.fromisoformat, help="ISO time (UTC): records made before it go")
    cutoff.add_argument("--keep-days", type=_positive_days, help="keep this many days back from now, delete the rest")
    prune.set_defaults(handler=_prune_access)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _overlap_hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        hours = -1.0
    if not 0 <= hours <= 24 * 90:
        raise argparse.ArgumentTypeError(f"hours between 0 and 2160 (90 days), got {text!r}")
    return hours


def _positive_days(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of days, at least 1, got {text!r}")
    return int(text)


def _init(args: argparse.Namespace) -> int:
    from serving.plans import PLANS_DIR, load_plans
    from serving.store import repository
    from serving.store.database import Store

    store = Store.open(args.url)
    with store.transaction() as session:
        added = repository.save_plans(session, load_plans(args.plans or PLANS_DIR), _now())
    store.close()
    _out.print(f"state store at head; {added} new plan version(s) loaded")
    return 0


def _seed(args: argparse.Namespace) -> int:
    from serving.catalogue import load_catalogue
    from serving.store import repository
    from serving.store.database import Store

    data = repository.load_seed_file(args.file)
    store = Store.open(args.url)
    with store.transaction() as session:
        counts = repository.seed(session, data, load_catalogue(), _now())
    store.close()
    _out.print(f"seeded tenant {data.tenant}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    return 0


def _adjudicate(args: argparse.Namespace) -> int:
    from serving.adjudication import RuleTables, adjudicate
    from serving.store.database import Store
    from serving.validate_cli import load_claim, print_decision_table, read_attachments

    claim = load_claim(args.claim)
    readings = read_attachments(claim, args.images, args.models) if claim.attachments else {}
    store = Store.open(args.url)
    decision = adjudicate(claim, readings, store, RuleTables.load(), now=_now(), actor="cli")
    store.close()
    if not args.json:
        print_decision_table(claim, decision)
    print(decision.model_dump_json(indent=2))
    return 0


def _providers(args: argparse.Namespace) -> int:
    from rich.table import Table

    from serving.provider_job import run_provider_analysis
    from serving.rules.outliers import load_outlier_config
    from serving.store.database import Store

    config = load_outlier_config(args.config) if args.config else load_outlier_config()
    store = Store.open(args.url)
    results = run_provider_analysis(store, args.as_of, config, _now())
    store.close()
    table = Table("provider", "peer group", "claims", "judged", "deviating", "flagged")
    for r in results:
        table.add_row(r.provider_id, r.peer_group, str(r.claims), "yes" if r.judged else "no", ", ".join(r.deviating),
                      "[red]FLAG[/]" if r.flagged else "")
    _out.print(table)
    flagged = [r for r in results if r.flagged]
    for r in flagged:
        _out.print(f"{r.provider_id}: " + "; ".join(r.evidence))
    _out.print(f"{len(results)} providers, {sum(r.judged for r in results)} judged, {len(flagged)} flagged "
               f"(window ending {args.as_of.isoformat()}, settings {config.version})")
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from serving.store.api_keys import Role, create_key
    from serving.store.database import Store

    now = _now()
    expires = now + dt.timedelta(days=args.expires_in_days) if args.expires_in_days else None
    store = Store.open(args.url)
    with store.transaction() as session:
        key_id, token = create_key(session, tenant=args.tenant, role=Role(args.role), label=args.label, now=now,
                                   expires_at=expires)
    store.close()
    until = f", valid until {expires.isoformat(timespec='seconds')} UTC" if expires else ""
    _out.print(f"key {key_id} ({args.role}, tenant {args.tenant}{until}); keep it now, it is not shown again:")
    print(token)
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    from serving.store.api_keys import rotate
    from serving.store.database import Store

    now = _now()
    overlap = dt.timedelta(hours=args.overlap_hours)
    store = Store.open(args.url)
    try:
        with store.transaction() as session:
            key_id, token = rotate(session, args.key_id, now, overlap)
    finally:
        store.close()
    _out.print(f"key {key_id} replaces {args.key_id}, which works until "
               f"{(now + overlap).isoformat(timespec='seconds')} UTC at the latest; keep the new key now, it is not "
               "shown again:")
    print(token)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from serving.store.api_keys import list_keys
    from serving.store.database import Store

    store = Store.open(args.url)
    with store.transaction() as session:
        rows = list_keys(session, args.tenant)
        table = Table("tenant", "role", "label", "created", "expires", "revoked")
        table.add_column("key id", no_wrap=True, min_width=16)  # the id an operator copies, never cut
        for r in rows:
            table.add_row(r.tenant, r.role, r.label, r.created_at.isoformat(timespec="seconds"),
                          r.expires_at.isoformat(timespec="seconds") if r.expires_at else "",
                          r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "", r.key_id)
    store.close()
    _out.print(table)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from serving.store.api_keys import revoke
    from serving.store.database import Store

    store = Store.open(args.url)
    with store.transaction() as session:
        done = revoke(session, args.key_id, _now())
    store.close()
    _out.print(f"key {args.key_id} revoked" if done else f"key {args.key_id}: no such active key")
    return 0 if done else 2


def _rules_diff(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from serving.rules_diff import diff_files

    kind, old_version, new_version, changes = diff_files(args.old, args.new)
    table = Table("entry", "change", "old", "new", title=f"{kind}: {old_version} -> {new_version}")

    def show(value: object) -> str:
        return "" if value is None else json.dumps(value, default=str)[:120]

    for change in changes:
        table.add_row(change.path, change.kind, show(change.old), show(change.new))
    _out.print(table)
    _out.print(f"{len(changes)} change(s). Decisions already made keep the versions they were made with.")
    return 0


def _access(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from rich.table import Table

    from serving.store.access_log import access_records
    from serving.store.database import Store

    store = Store.open(args.url)
    with store.reading() as session:
        records = access_records(session, tenant=args.tenant, since=args.since, subject=args.subject,
                                 request_id=args.request_id, limit=args.limit or None)
    store.close()
    if args.jsonl:  # plain stdout: no console wrapping or markup in an export
        for r in records:
            print(json.dumps({**dataclasses.asdict(r), "at": r.at.isoformat()}))
        return 0
    table = Table("at (UTC)", "tenant", "key", "method", "route", "subject", "status", "ms")
    for r in records:
        key = (r.key_id or "-") + ("" if r.authenticated else " (refused)")
        table.add_row(r.at.isoformat(timespec="seconds"), r.tenant or "-", key, r.method, r.route, r.subject,
                      str(r.status), f"{r.duration_ms:.1f}")
    _out.print(table)
    _out.print(f"{len(records)} request(s), latest first")
    return 0


def _prune_access(args: argparse.Namespace) -> int:
    from serving.store.access_log import prune_access_log
    from serving.store.database import Store

    before = args.before if args.before is not None else _now() - dt.timedelta(days=args.keep_days)
    store = Store.open(args.url)
    try:
        deleted = prune_access_log(store, before)
    finally:
        store.close()
    _out.print(f"access log: {deleted} record(s) made before {before.isoformat(timespec='seconds')} deleted")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from serving.store import audit
    from serving.store.access_log import verify_access
    from serving.store.database import Store

    store = Store.open(args.url)
    with store.transaction() as session:
        report, access = audit.verify(session), verify_access(session)
    store.close()
    if not report.ok:
        raise AuditBrokenError(f"audit trail broken ({report.records} records): " + "; ".join(report.problems))
    if not access.ok:
        raise AuditBrokenError(f"access log broken ({access.records} records): " + "; ".join(access.problems))
    _out.print(f"audit trail intact: {report.records} records, hash chain verified")
    _out.print(f"access log intact: {access.records} records, hash chain verified"
               + (f" ({access.unchained} written before the chain, not covered)" if access.unchained else ""))
    return 0
