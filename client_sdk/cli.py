"""``lwm``: the command line of the learnware market.

Exit codes scripts can rely on: 0 success, 1 the market or the data refused the request (the
message says why), 2 wrong usage, 3 the market could not be reached.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_IDENTITY = "~/.config/learnware-market/identity.pem"
DEFAULT_MARKET = os.environ.get("LWM_MARKET", "http://127.0.0.1:8765")


def _read_table(path: str):
    import pandas as pd
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if p.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(p)
    return pd.read_csv(p)


def _read_semantic(path: str) -> dict:
    from protocol.errors import ArgumentError
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ArgumentError(f"cannot read the semantic specification {path}: {exc}",
                            field="semantic") from exc


def _identity(args):
    from protocol.identity import Identity
    path = Path(args.identity).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no identity at {path}: create one with `lwm keygen`")
    return Identity.load(path, os.environ.get(args.passphrase_env) if args.passphrase_env else None)


def _client(args, need_identity: bool = False):
    from client_sdk.client import MarketClient
    ident = _identity(args) if need_identity or Path(args.identity).expanduser().exists() else None
    return MarketClient(args.market, ident, market_key=args.market_key,
                        certificate=getattr(args, "certificate", None))


def _printable(text: str) -> str:
    """Developer text for a terminal: control characters (escape sequences that could rewrite
    the screen, bidi overrides) shown as ``<U+001B>``, newlines and tabs kept."""
    import unicodedata
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf")
                   else f"<U+{ord(c):04X}>" for c in text)


def _emit(args, human: str, data: Any) -> None:
    if args.json:
        print(json.dumps(data, indent=1, sort_keys=True, default=str))
    else:
        print(human)


def _result_dict(res) -> dict:
    from dataclasses import asdict
    return asdict(res)


def _named(learnware_id: str, name: str | None) -> str:
    return f"{learnware_id:10s}" + (f" {name!r}" if name else "")


def _reports_text(m) -> str:
    r = getattr(m, "reports", None)
    if not r or not r.get("count"):
        return ""
    return (f"  [{r['count']} user report(s): median {r['metric']} {r['median']:.4g}, "
            f"middle half {r['q1']:.4g}-{r['q3']:.4g}]")


def _result_text(res) -> str:
    """A search answer: the ranked learnwares (with names), then the mixture."""
    lines = [f"island {res.island_id or '-'}" + (f"  objective {res.objective}"
                                                if res.objective else "")]
    if res.message:
        lines.append(f"note: {res.message}")
    for i, m in enumerate(res.single, 1):
        est = (f"  expected {res.objective} about {m.estimate:.4g}"
               if m.estimate is not None else "")
        lines.append(f"{i:2d}. {_named(m.learnware_id, m.name)}  score {m.score:.3f}  "
                     f"mmd {m.mmd:.4g}  fit {m.fit}{est}{_reports_text(m)}")
    if res.mixture:
        parts = ", ".join(f"{i} x{w:.2f}" for i, w in zip(res.mixture.learnware_ids,
                                                          res.mixture.weights))
        lines.append(f"mixture: {parts}  (score {res.mixture.score:.3f})")
    for t in res.text_matches[:5]:
        lines.append(f"text match: {t['learnware_id']} {t['name']!r} ({t['score']:.2f})")
    return "\n".join(lines)


LOCALIZE_READING = ("The localisation recommends the mixture (its expected metric is the "
                    "answer); the ranked single learnwares are secondary picks.")


def _localize_text(res) -> str:
    """A localisation answer: the recommended mixture first, then each ranked learnware's
    expected metric and range, then the anchor metrics measured here (exact, and as sent)."""
    obj = res.objective or "metric"
    lines = [f"island {res.island_id or '-'}  objective {obj}"]
    if res.mixture:
        parts = ", ".join(f"{i} x{w:.2f}" for i, w in zip(res.mixture.learnware_ids,
                                                          res.mixture.weights))
        est = (f"  expected {obj} about {res.mixture.estimate:.4g}"
               if res.mixture.estimate is not None else "")
        lines.append(f"recommended: mixture {parts}{est}")
        lines.append(f"  ({LOCALIZE_READING})")
    else:
        lines.append("recommended: no mixture; the best-ranked learnware below")
    if res.message:
        lines.append(f"note: {res.message}")
    if res.single:
        lines.append(f"ranked learnwares (expected {obj}, +/- half the 80% range):")
    for i, m in enumerate(res.single, 1):
        est = ("expected unknown" if m.estimate is None else
               f"expected {m.estimate:.4g}" + (f" +/- {m.uncertainty:.2g}"
                                               if m.uncertainty is not None else ""))
        lines.append(f"{i:2d}. {_named(m.learnware_id, m.name)}  {est}{_reports_text(m)}")
    if res.anchor_metrics:
        lines.append(f"anchors measured here ({obj}: exact local value -> value sent):")
        for lid, value in res.anchor_metrics.items():
            sent = res.sent_metrics.get(lid)
            lines.append(f"    {lid:10s} {value:.6g} -> "
                         + (f"{sent:.6g}" if sent is not None else "not sent"))
    lines.append(f"({len(res.anchors)} anchors evaluated locally in {res.rounds} round(s); only "
                 f"their rounded metrics and {res.n_rows_sent} as the row count were sent; "
                 f"{res.anchors_ignored} more anchors named by the market were ignored: over "
                 "budget)")
    return "\n".join(lines)


# --- commands ---------------------------------------------------------------------------------
def cmd_keygen(args) -> int:
    from protocol.identity import Identity
    ident = Identity.generate()
    pw = os.environ.get(args.passphrase_env) if args.passphrase_env else None
    path = ident.save(Path(args.out or args.identity).expanduser(), pw, overwrite=args.force)
    _emit(args, f"new identity {ident.key_id} saved to {path} (mode 0600)",
          {"key_id": ident.key_id, "public_key": ident.public_key_b64, "path": str(path)})
    return EXIT_OK


def cmd_serve(args, rest: list[str]) -> int:
    # The server runs as its own program: the client SDK never imports it.
    os.execv(sys.executable, [sys.executable, "-m", "market_server", "serve", *rest])
    return EXIT_OK  # pragma: no cover


def cmd_admin(args, rest: list[str]) -> int:
    # operator commands on the market's storage: run by the server program, like serve
    os.execv(sys.executable, [sys.executable, "-m", "market_server", "admin", *rest])
    return EXIT_OK  # pragma: no cover


def cmd_spec(args) -> int:
    from client_sdk.data import as_matrix
    from client_sdk.rkme import RKMESpec
    from protocol.encoding import canonical_bytes
    df = _read_table(args.data)
    cols = args.features.split(",") if args.features else list(df.columns)
    X = as_matrix(df, cols, name=args.data)
    spec = RKMESpec.fit(X, k=args.k, gamma=args.gamma, random_state=args.seed)
    out = Path(args.out)
    out.write_bytes(canonical_bytes(spec.to_dict()))
    _emit(args, f"RKME spec of {len(X)} rows x {X.shape[1]} features -> {out} "
          f"({spec.k} reduced points, gamma {spec.gamma:.4g})",
          {"path": str(out), "rows": len(X), "k": spec.k, "gamma": spec.gamma})
    return EXIT_OK


def cmd_publish(args) -> int:
    from learnware_core.modelfile import load_model
    sem = _read_semantic(args.semantic)
    if args.model_card:
        from protocol.errors import ArgumentError
        try:
            sem["model_card"] = Path(args.model_card).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ArgumentError(f"cannot read the model card {args.model_card}: {exc}",
                                field="model_card") from exc
    model = load_model(Path(args.model).read_bytes())
    df = _read_table(args.data)
    with _client(args, need_identity=True) as c:
        dp = (None if args.epsilon is None else
              {"epsilon": args.epsilon, "delta": args.delta, "bounds": _bounds(args.bounds)})
        lid = c.publish(model, df, sem, k=args.k, dp=dp)
    _emit(args, f"published {lid}", {"learnware_id": lid})
    return EXIT_OK


def _bounds(text: str | None):
    """``"LO,HI"`` (every feature) or ``"LO1:HI1,LO2:HI2,..."`` (one pair per feature)."""
    from protocol.errors import ArgumentError
    if not text:
        raise ArgumentError("--epsilon needs --bounds (the range of the spec's points)",
                            field="bounds")
    try:
        if ":" in text:
            pairs = [tuple(float(v) for v in p.split(":")) for p in text.split(",")]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        lo, hi = (float(v) for v in text.split(","))
        return lo, hi
    except ValueError:
        raise ArgumentError(f"--bounds {text!r} is not LO,HI or LO1:HI1,LO2:HI2,...",
                            field="bounds") from None


def cmd_search(args) -> int:
    sem = _read_semantic(args.semantic)
    df = _read_table(args.data) if args.data else None
    with _client(args) as c:
        res = c.search(df, sem, max_results=args.max_results, private=args.private)
    _emit(args, _result_text(res), _result_dict(res))
    return EXIT_OK


def cmd_world(args) -> int:
    """The specification world: components of islands and the features that connect them."""
    with _client(args) as c:
        world = c.world()
    lines = []
    for comp in world["components"]:
        lines.append(f"{comp['component_id']}: {comp['task_type']} {comp['target']!r} "
                     f"({comp['objective']}), {len(comp['islands'])} island(s), "
                     f"{comp['learnware_count']} learnware(s)")
        for isl in comp["islands"]:
            lines.append(f"  {isl}: {', '.join(world['island_features'].get(isl, []))}")
        if comp["connecting_features"]:
            lines.append(f"  connected by: {', '.join(comp['connecting_features'])}")
    for m in world["matches"]:
        lines.append(f"match: {m['feature']} = {m['matched']} (by {m['by']})")
    _emit(args, "\n".join(lines) or "no islands yet", world)
def _find_text(res: dict) -> str:
    """Ranked islands and learnwares for a requirement in words, with the words that matched."""
    lines = [f"ranker: {res['ranker']} over {res['indexed']} learnwares (embedding: "
             f"{res['embedding']}" + (f", {res['pending']} passages pending" if res["pending"]
                                      else "") + ")"]
    if not res["learnwares"]:
        lines.append("no learnware matches these words")
        return "\n".join(lines)
    lines.append("islands:")
    for i, isl in enumerate(res["islands"], 1):
        lines.append(f"{i:2d}. {isl['island_id']}  score {isl['score']:.4g}  "
                     f"{isl['task_type']} of {isl['target']!r} from {isl['n_features']} "
                     f"features; best {isl['best_learnware_id']} "
                     f"({isl['matching_learnwares']} matching)")
    lines.append("learnwares:")
    for i, lw in enumerate(res["learnwares"], 1):
        why = "; ".join(f"{f}: {', '.join(ws)}" for f, ws in lw["matched_words"].items())
        cos = "" if lw["cosine"] is None else f"  cosine {lw['cosine']:.3f}"
        passage = f"  best passage: {lw['best_passage']}" if lw["best_passage"] else ""
        lines.append(f"{i:2d}. {_named(lw['learnware_id'], lw['name'])}  "
                     f"score {lw['score']:.4g}  bm25 {lw['lexical']:.3g}{cos}")
        if why or passage:
            lines.append(f"      matched {why or 'no word'}{passage}")
    return "\n".join(lines)


def cmd_find(args) -> int:
    with _client(args) as c:
        res = c.describe(args.requirement, limit=args.limit, ranker=args.ranker)
    _emit(args, _find_text(res), res)
    return EXIT_OK


def cmd_download(args) -> int:
    from learnware_core.modelfile import dump_model
    with _client(args) as c:
        lw = c.download(args.learnware_id)
    out = Path(args.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{lw.id}.skops"
    path.write_bytes(dump_model(lw.model))
    (out / f"{lw.id}.semantic.json").write_text(json.dumps(lw.semantic, indent=1))
    human = f"{lw.id}: {type(lw.model).__name__}, verified developer signature -> {path}"
    if lw.model_card:
        card = out / f"{lw.id}.model_card.md"
        card.write_text(lw.model_card, encoding="utf-8")
        human += (f"\nmodel card (signed by the developer) -> {card}:\n\n"
                  f"{_printable(lw.model_card)}")
    else:
        human += "\n(no model card)"
    _emit(args, human, {"learnware_id": lw.id, "path": str(path), "model": type(lw.model).__name__,
                        "model_card": lw.model_card})
    return EXIT_OK


def cmd_withdraw(args) -> int:
    with _client(args, need_identity=True) as c:
        c.delete(args.learnware_id, reason=args.reason)
    _emit(args, f"{args.learnware_id} withdrawn: {args.reason or '(no reason given)'}",
          {"learnware_id": args.learnware_id, "withdrawn": True, "reason": args.reason})
    return EXIT_OK


def cmd_localize(args) -> int:
    sem = _read_semantic(args.semantic)
    df = _read_table(args.data)
    if args.target not in df.columns:
        from protocol.errors import ArgumentError
        raise ArgumentError(f"{args.data} has no column {args.target!r}", field="target")
    from client_sdk.disclosure import MetricBudget
    budget = MetricBudget(max_anchors_per_round=args.max_anchors, max_rounds=args.max_rounds,
                          max_values=args.max_values, significant_digits=args.digits,
                          jitter=args.jitter, epsilon=args.epsilon, clip=args.clip)
    with _client(args) as c:
        res = c.localize(df.drop(columns=[args.target]), df[args.target].to_numpy(), sem,
                         rounds=args.rounds, max_anchors=args.max_anchors, budget=budget)
    data = _result_dict(res)
    data["recommended"] = "mixture" if res.mixture else "single"
    _emit(args, _localize_text(res), data)
    return EXIT_OK


def cmd_report(args) -> int:
    df = _read_table(args.data)
    if args.target not in df.columns:
        from protocol.errors import ArgumentError
        raise ArgumentError(f"{args.data} has no column {args.target!r}", field="target")
    with _client(args, need_identity=True) as c:
        r = c.report(args.learnware_id, df.drop(columns=[args.target]),
                     df[args.target].to_numpy(), reuse=args.reuse, comment=args.comment)
    s = r.summary
    human = (f"reported on {r.learnware_id}: {r.metric} {r.value:.6g} measured here on "
             f"{len(df)} rows; sent {r.sent:.6g} on {r.n_rows_sent} rows (rounded, jittered), "
             f"reuse {r.reuse}" + (" (replaced your earlier report)" if r.replaced else "")
             + f"\n{r.learnware_id} now has {s['count']} report(s): median {s['metric']} "
             f"{s['median']:.4g} (middle half {s['q1']:.4g}-{s['q3']:.4g})")
    _emit(args, human, _result_dict(r))
    return EXIT_OK


def cmd_demo(args) -> int:
    from client_sdk.demo.hetero import hetero_report
    out = Path(args.out)
    if args.hetero:  # issue #15's scenario alone
        hetero_report(out, args.island, quick=args.quick, seed=args.seed,
                      progress=not args.json,
                      reference=Path(args.reference) if args.reference else None)
        return EXIT_OK
    from client_sdk.demo.run import run_demo
    run_demo(out=out, islands=args.island, quick=args.quick, seed=args.seed,
             progress=not args.json, refine=not args.no_kernel_refinement)
    if not (args.no_hetero or args.no_kernel_refinement):
        # issue #15: developers and users with different feature sets; the homogeneous market
        # just measured (same users, seed and n grid) is the side-by-side reference, read from
        # its results.csv rather than run a second time
        hetero_report(out, args.island, quick=args.quick, seed=args.seed,
                      progress=not args.json, reference=out / "results.csv")
    return EXIT_OK


def cmd_ui(args) -> int:
    """The local workbench (client_sdk.workbench): a web app on 127.0.0.1 for this user."""
    from client_sdk.workbench import serve
    from protocol.identity import Identity
    saved = Path(args.identity).expanduser().exists()
    ident = _identity(args) if saved else Identity.generate()
    serve(args.market, ident, port=args.port, open_browser=not args.no_browser,
          market_key=args.market_key, identity_saved=saved)
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------
def cmd_certify(args) -> int:
    """The operator (``--identity``) certifies a developer key to publish on its market."""
    from protocol.certificate import issue_certificate
    developer = args.developer
    if Path(developer).expanduser().is_file():  # a file holding the developer's public key
        developer = Path(developer).expanduser().read_text().strip()
    cert = issue_certificate(_identity(args), developer, valid_days=args.days)
    Path(args.out).write_text(json.dumps(cert, indent=1, sort_keys=True) + "\n")
    _emit(args, f"certificate for {developer} written to {args.out} (expires "
          f"{cert['expires']}); the market runs with --publishers certified --operator-key "
          f"{cert['operator']}", cert)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lwm", description="learnware-market: publish models with specifications that "
        "reveal no data, and find the right ones for your task. Raw data never leaves this "
        "machine: only specifications, models and metrics are sent.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp, market=True, identity=True):
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        if market:
            sp.add_argument("--market", default=DEFAULT_MARKET,
                            help=f"market URL (default {DEFAULT_MARKET}; env LWM_MARKET)")
            sp.add_argument("--market-key", default=None,
                            help="pin the market's public key (default: trust on first use)")
        if identity:
            sp.add_argument("--identity", default=DEFAULT_IDENTITY,
                            help=f"your key file (default {DEFAULT_IDENTITY})")
            sp.add_argument("--passphrase-env", default=None,
                            help="name of an environment variable holding the key's passphrase")

    sp = sub.add_parser("keygen", help="create your Ed25519 identity",
                        description="Create an Ed25519 key pair; the private key file is 0600.")
    common(sp, market=False)
    sp.add_argument("--out", default=None, help="where to write the key (default --identity)")
    sp.add_argument("--force", action="store_true", help="overwrite an existing key file")
    sp.set_defaults(func=cmd_keygen)

    sp = sub.add_parser("serve", help="run a market server (see `lwm serve --help`)",
                        add_help=False)
    sp.set_defaults(func=None)

    sp = sub.add_parser("admin", help="operator: backup, restore, rotate-key (see `lwm admin "
                        "--help`)", add_help=False)
    sp.set_defaults(func=None)

    sp = sub.add_parser("spec", help="compute an RKME specification of a table, locally",
                        description="Fit a reduced kernel mean embedding of a CSV/Parquet table "
                        "and write it as canonical JSON. Standalone kernel defaults; publishing "
                        "uses the island's kernel instead.")
    common(sp, market=False, identity=False)
    sp.add_argument("data", help="CSV or Parquet file")
    sp.add_argument("--features", default=None, help="comma-separated columns (default: all)")
    sp.add_argument("-k", type=int, default=100, help="reduced points (default 100)")
    sp.add_argument("--gamma", type=float, default=None)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default="spec.json")
    sp.set_defaults(func=cmd_spec)

    sp = sub.add_parser("publish", help="publish a model with its specification",
                        description="Compute the RKME of your training inputs locally under the "
                        "island's kernel, sign model + specs, upload. Sends no rows.")
    common(sp)
    sp.add_argument("--model", required=True, help="the model as a .skops file")
    sp.add_argument("--data", required=True, help="training inputs (CSV/Parquet) with the "
                    "semantic spec's input_features as columns")
    sp.add_argument("--semantic", required=True, help="semantic specification (JSON)")
    sp.add_argument("-k", type=int, default=100)
    sp.add_argument("--model-card", default=None,
                    help="markdown file: intended use, training data in words, limits, licence "
                         "(signed with the semantic specification)")
    sp.add_argument("--certificate", default=None, help="the operator's publisher certificate "
                    "(JSON from lwm certify), for markets that admit only certified publishers")
    sp.add_argument("--epsilon", type=float, default=None,
                    help="publish an (epsilon, delta)-differentially private spec (needs "
                    "--bounds; 20 rows suffice at epsilon <= 1)")
    sp.add_argument("--delta", type=float, default=1e-5)
    sp.add_argument("--bounds", default=None, help="--bounds=LO,HI or LO1:HI1,LO2:HI2,...: "
                    "the range of the DP spec's points, from public knowledge, not the rows")
    sp.set_defaults(func=cmd_publish)

    sp = sub.add_parser("certify", help="operator: certify a developer key to publish",
                        description="Sign, with your (the operator's) --identity, a "
                        "certificate that the developer key may publish on markets run with "
                        "--publishers certified --operator-key <your public key>.")
    common(sp, market=False)
    sp.add_argument("--developer", required=True,
                    help="the developer's base64 public key, or a file holding it")
    sp.add_argument("--days", type=float, default=365.0, help="validity (default 365 days)")
    sp.add_argument("--out", default="certificate.json")
    sp.set_defaults(func=cmd_certify)

    sp = sub.add_parser("search", help="find learnwares for your task",
                        description="Sends only your RKME requirement (or only the semantic "
                        "part without --data).")
    common(sp)
    sp.add_argument("--semantic", required=True)
    sp.add_argument("--data", default=None, help="your unlabelled inputs (CSV/Parquet)")
    sp.add_argument("--max-results", type=int, default=5)
    sp.add_argument("--private", action="store_true",
                    help="send not even the requirement: mirror the island's index (cached, "
                    "only changes are downloaded again) and rank on this machine")
    sp.set_defaults(func=cmd_search)

    sp = sub.add_parser("world", help="islands connected by shared features (the world)")
    common(sp)
    sp.set_defaults(func=cmd_world)
    sp = sub.add_parser("find", help="find islands and learnwares from your task in words",
                        description="Sends only the words you give (GET /v1/describe): the "
                        "market ranks its learnwares' public texts for them.")
    common(sp)
    sp.add_argument("requirement", help="your task in words (at most 500 characters)")
    sp.add_argument("--limit", type=int, default=10)
    sp.add_argument("--ranker", choices=["auto", "lexical", "semantic", "hybrid"],
                    default="auto")
    sp.set_defaults(func=cmd_find)

    sp = sub.add_parser("download", help="download and verify a learnware")
    common(sp)
    sp.add_argument("learnware_id")
    sp.add_argument("--out", default=None, help="folder for the model (default .)")
    sp.set_defaults(func=cmd_download)

    sp = sub.add_parser("withdraw", help="withdraw a learnware (yours, or any as the operator)",
                        description="The market keeps the record (who withdrew it, why, when) "
                        "and stops serving its model.")
    common(sp)
    sp.add_argument("learnware_id")
    sp.add_argument("--reason", default=None, help="why (shown to everyone who asks for it)")
    sp.set_defaults(func=cmd_withdraw)

    sp = sub.add_parser("localize", help="find learnwares from anchor metrics (few labels)",
                        description="Downloads the island's anchor learnwares, evaluates them on "
                        "your labelled rows locally, sends only the metric values. "
                        + LOCALIZE_READING + " The output leads with the mixture, then each "
                        "ranked learnware's expected metric and range, then the anchor metrics "
                        "measured here (exact, and as sent).")
    common(sp)
    sp.add_argument("--semantic", required=True)
    sp.add_argument("--data", required=True, help="your labelled rows (CSV/Parquet)")
    sp.add_argument("--target", required=True, help="the label column of --data")
    sp.add_argument("--rounds", type=int, default=1)
    sp.add_argument("--max-anchors", type=int, default=8,
                    help="anchors evaluated per round, at most (default 8)")
    sp.add_argument("--max-rounds", type=int, default=3, help="budget: rounds (default 3)")
    sp.add_argument("--max-values", type=int, default=24,
                    help="budget: metric values sent in total (default 24)")
    sp.add_argument("--digits", type=int, default=3,
                    help="significant digits of each value sent (default 3)")
    sp.add_argument("--jitter", type=float, default=0.5,
                    help="noise on each value, as a fraction of its sampling sd (default 0.5)")
    sp.add_argument("--epsilon", type=float, default=None,
                    help="differential privacy for the whole call (Laplace; accuracy, rmse, "
                         "mae; rmse/mae need --clip)")
    sp.add_argument("--clip", type=float, default=None,
                    help="largest absolute residual counted (with --epsilon for rmse/mae)")
    sp.set_defaults(func=cmd_localize)

    sp = sub.add_parser("ui", help="the local workbench: use the market from a web page on "
                        "this machine", description="Serve the workbench on 127.0.0.1 (only): "
                        "load a table, search, reuse and export predictions, or publish a model, "
                        "without writing code; see every request sent to the market. Prints "
                        "(and opens) its address, which carries a random access token.")
    common(sp)
    sp.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free)")
    sp.add_argument("--no-browser", action="store_true", help="print the address only")
    sp.set_defaults(func=cmd_ui)
    sp = sub.add_parser("report", help="send a signed usage report on a learnware you reused",
                        description="Runs the learnware here on your labelled rows and sends "
                        "only the island objective's value (rounded, jittered), the row count "
                        "(1-2-5 grid), how you reused it and an optional comment. One report "
                        "per key and learnware: a new one replaces yours.")
    common(sp)
    sp.add_argument("learnware_id")
    sp.add_argument("--data", required=True, help="your labelled rows (CSV/Parquet)")
    sp.add_argument("--target", required=True, help="the label column of --data")
    sp.add_argument("--reuse", default="direct",
                    choices=["direct", "averaging", "ensemble_pruning", "job_selector",
                             "feature_augment", "other"], help="how you reused it")
    sp.add_argument("--comment", default=None, help="a short public comment (<= 500 chars)")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("demo", help="the main job: a market of sales models helps new users",
                        description="Starts a real market server on loopback, publishes one "
                        "learnware per Texas city, and measures how held-out cities do with "
                        "the market's help vs. training from scratch.")
    sp.add_argument("--json", action="store_true", help="no progress bars")
    sp.add_argument("--out", default="demo-out")
    sp.add_argument("--island", choices=["txhousing", "vote", "all"], default="all")
    sp.add_argument("--quick", action="store_true", help="fewer users and sizes (smoke run)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--no-kernel-refinement", action="store_true",
                    help="ablation: islands keep their base kernel (declared feature scales)")
    sp.add_argument("--hetero", action="store_true",
                    help="only the heterogeneous scenario: developers and users hold different "
                    "feature sets; islands connect through shared features (with the "
                    "homogeneous market for the same users side by side)")
    sp.add_argument("--no-hetero", action="store_true",
                    help="skip the heterogeneous scenario that follows the main job")
    sp.add_argument("--reference", default=None,
                    help="with --hetero: results.csv of a homogeneous demo run (same seed) to "
                    "compare with, instead of running the homogeneous market again")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        return cmd_serve(None, argv[1:])
    if argv and argv[0] == "admin":
        return cmd_admin(None, argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from protocol.errors import ArgumentError, LearnwareError
    import httpx
    try:
        return args.func(args)
    except ArgumentError as exc:  # before LearnwareError: a wrong argument is a usage error
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LearnwareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for d in exc.details or [] if isinstance(exc.details, list) else []:
            print(f"  - {d.get('message')}", file=sys.stderr)
        return EXIT_REFUSED
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the market: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
