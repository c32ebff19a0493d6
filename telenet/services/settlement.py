"""Settlement (结算): the monthly statement per (inviting 邀请方, invited 受邀方) institution pair, built from
the fee ledger's lines alone (``fees``), as JSON and as CSV for a spreadsheet."""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select

from telenet.domain import fees as rules
from telenet.domain.access import Actor, Role
from telenet.domain.assessment import yuan
from telenet.domain.routing import LOCAL_TZ
from telenet.services.access import require_role
from telenet.services.fees import CURRENCY, institutions, involving, scope_root
from telenet.services.hub import Hub, read_use_case
from telenet.store.models import FeeLine

SETTLEMENT_COLUMNS = (
    "period",
    "inviting_code",
    "inviting_name",
    "invited_code",
    "invited_name",
    "charges",
    "refunds",
    "gross_fen",
    "inviting_fen",
    "invited_fen",
    "gross_yuan",
    "inviting_yuan",
    "invited_yuan",
)
TOTAL_LABEL = "合计 TOTAL"


async def settlement(hub: Hub, actor: Actor, period: str, institution: str | None = None) -> dict[str, Any]:
    """The statement of a month (Asia/Shanghai) per (inviting, invited) pair, built from the ledger lines
    alone, for coordinators and admins over the pairs that involve their subtree (or ``institution``)."""
    require_role(actor, Role.COORDINATOR, Role.ADMIN, action="read settlement statements")
    start, end = rules.period_bounds(period, LOCAL_TZ)
    async with read_use_case(hub, actor, "settlement.read", "settlement", period) as uow:
        session = uow.session
        root, subtree = await scope_root(session, actor, institution, uow)
        uow.audit(object_path=root.path, detail={"institution": root.code})
        rows = (
            (
                await session.execute(
                    select(FeeLine)
                    .where(involving(root.path, subtree), FeeLine.at >= start, FeeLine.at < end)
                    .order_by(FeeLine.id)
                )
            )
            .scalars()
            .all()
        )
        insts = await institutions(
            session, {x.inviting_institution_id for x in rows} | {x.invited_institution_id for x in rows}
        )
        lines = [
            rules.FeeLine(
                id=x.id,
                inviting_code=insts[x.inviting_institution_id].code,
                invited_code=insts[x.invited_institution_id].code,
                service=x.service,
                price_fen=x.price_fen,
                inviting_fen=x.inviting_fen,
                invited_fen=x.invited_fen,
                refund_of=x.refund_of,
                at=x.at,
            )
            for x in rows
        ]
        statement = rules.settle(lines, start=start, end=end)
        names = {inst.code: inst.name for inst in insts.values()}
        gross, inviting, invited = rules.settlement_total(statement)
        return {
            **CURRENCY,
            "period": period,
            "timezone": str(LOCAL_TZ),
            "from": start.isoformat(),
            "to": end.isoformat(),
            "institution": root.code,
            "definitions": {
                "rows": "one row per (inviting 邀请方, invited 受邀方) institution pair with ledger lines in the month",
                "gross_fen": "sum of the line prices, refunds negative; inviting_fen + invited_fen == gross_fen",
            },
            "rows": [
                {
                    "inviting": {"code": r.inviting_code, "name": names[r.inviting_code]},
                    "invited": {"code": r.invited_code, "name": names[r.invited_code]},
                    "charges": r.charges,
                    "refunds": r.refunds,
                    "gross_fen": r.gross_fen,
                    "inviting_fen": r.inviting_fen,
                    "invited_fen": r.invited_fen,
                }
                for r in statement
            ],
            "totals": {
                "lines": len(lines),
                "charges": sum(r.charges for r in statement),
                "refunds": sum(r.refunds for r in statement),
                "gross_fen": gross,
                "inviting_fen": inviting,
                "invited_fen": invited,
            },
        }


def settlement_csv(statement: dict[str, Any]) -> str:
    """The statement as CSV: a UTF-8 byte-order mark first (so a spreadsheet opens the Chinese names
    correctly), one row per pair, then a total row that is the sum of the rows above it."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(SETTLEMENT_COLUMNS)
    period = statement["period"]
    for row in statement["rows"]:
        writer.writerow(
            (
                period,
                row["inviting"]["code"],
                row["inviting"]["name"],
                row["invited"]["code"],
                row["invited"]["name"],
                row["charges"],
                row["refunds"],
                row["gross_fen"],
                row["inviting_fen"],
                row["invited_fen"],
                yuan(row["gross_fen"]),
                yuan(row["inviting_fen"]),
                yuan(row["invited_fen"]),
            )
        )
    t = statement["totals"]
    writer.writerow(
        (
            period,
            TOTAL_LABEL,
            "",
            "",
            "",
            t["charges"],
            t["refunds"],
            t["gross_fen"],
            t["inviting_fen"],
            t["invited_fen"],
            yuan(t["gross_fen"]),
            yuan(t["inviting_fen"]),
            yuan(t["invited_fen"]),
        )
    )
    return out.getvalue()
