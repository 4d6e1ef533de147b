"""Polling: ``GET /api/v1/turns/{id}`` requests/s on a finished turn, 200 and 304 paths.

    python -m bench.polling --connections 8 64 --duration 5 [--pk-url http://127.0.0.1:8101]

The 200 path sends no If-None-Match; the 304 path sends the turn's current ETag. With
``--pk-url`` the same load also hits the plain primary-key read yardstick (bench/pk_app.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from .client import Client, add_target_args, setup_client
from .load import fmt_rps, requests_per_second
from .turns import CONTENT, agent_for, create_session


def finished_turn(base_url: str, token: str, agent_id: int) -> tuple[int, str]:
    """A completed turn to poll, and its ETag."""
    with setup_client(base_url, token) as rc:
        session_id = create_session(rc, agent_id)
        turn_id = rc.turns.wait(rc.turns.create(session_id, CONTENT).id).id
    # The ETag is a header of the answer, which the Python client does not expose.
    client = Client(base_url, token)
    etag = client.expect(client.get(f"/api/v1/turns/{turn_id}"), 200).headers["etag"]
    client.close()
    return turn_id, etag


def measure_polling(
    base_url: str,
    token: str,
    turn_id: int,
    etag: str,
    *,
    connections: list[int],
    duration: float,
    load: str = "auto",
    pk_url: str | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """{"200": {conns: result}, "304": {...}, "pk": {...}} (pk only with ``pk_url``).

    The paths take turns, ``rounds`` times for ``duration / rounds`` seconds, and each reports
    its median round: on a shared machine a drift of speed then weighs on all of them alike,
    rather than on whichever ran while it lasted.
    """
    url = f"{base_url}/api/v1/turns/{turn_id}"
    auth = {"Authorization": f"Bearer {token}"}
    targets = {
        "200": (url, auth),
        "304": (url, {**auth, "If-None-Match": etag}),
    }
    if pk_url:
        targets["pk"] = (f"{pk_url}/turns/{turn_id}", None)
    out: dict[str, Any] = {"200": {}, "304": {}, "pk": {}}
    for conns in connections:
        runs: dict[str, list[dict[str, Any]]] = {path: [] for path in targets}
        for _ in range(rounds):
            for path, (target, headers) in targets.items():
                runs[path].append(
                    requests_per_second(
                        target,
                        connections=conns,
                        duration=duration / rounds,
                        headers=headers,
                        load=load,
                    )
                )
        for path, results in runs.items():
            results.sort(key=lambda r: r["requests_per_s"])
            out[path][conns] = results[len(results) // 2]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--pk-url", help="base URL of bench/pk_app.py on the same database")
    parser.add_argument("--agent-id", type=int, help="an agent on provider instant (else made)")
    args = parser.parse_args(argv)
    agent_id = agent_for(parser, args)
    turn_id, etag = finished_turn(args.base_url, args.token, agent_id)
    result = measure_polling(
        args.base_url,
        args.token,
        turn_id,
        etag,
        connections=args.connections,
        duration=args.duration,
        load=args.load,
        pk_url=args.pk_url,
    )
    print(f"polling GET /api/v1/turns/{turn_id} ({args.duration:g} s per figure):")
    for path in ("pk", "200", "304"):
        for conns, figures in result[path].items():
            label = "PK read yardstick" if path == "pk" else f"turn {path}"
            print(f"  {label:<18} {conns:>3} conns {fmt_rps(figures)}  ({figures['tool']})")


if __name__ == "__main__":
    main()
