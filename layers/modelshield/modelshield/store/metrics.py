"""The metrics table: the dashboard's counters (layout in `modelshield.dashboard.counters`).

Each stream record is applied in one transaction together with a `seen#<eventID>` marker written only if
absent, so a redelivered record (streams deliver at least once, retries replay whole batches) is counted
once. The chain's verified head moves by a conditional write on its previous value.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from modelshield.dashboard.chain import ChainFinding, ChainState
from modelshield.dashboard.counters import HOURLY_KEEP, Delta

SEEN_KEEP = timedelta(days=3)  # longer than a stream's 24 h retention: a replay always finds its marker
MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems call


class MetricsStore:
    def __init__(self, table_name: str, dynamodb: Any) -> None:
        self.table = dynamodb.Table(table_name)
        self.table_name = table_name
        self._client = dynamodb.meta.client

    # -- writes ------------------------------------------------------------------------------------
    def apply(
        self,
        event_id: str,
        delta: Delta,
        *,
        now: datetime,
        chain: tuple[ChainState, ChainState] | None = None,
        findings: list[ChainFinding] | None = None,
    ) -> bool:
        """Apply one stream record's effect once. Returns False if it had been applied already."""
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": self._ser_item(
                        {"pk": "seen", "sk": event_id, "expires_at": _epoch(now + SEEN_KEEP)}
                    ),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        for (pk, sk), amounts in sorted(delta.nonzero().items()):
            names = {f"#a{i}": name for i, name in enumerate(amounts)}
            values = {f":a{i}": amount for i, amount in enumerate(amounts.values())}
            expression = "ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(amounts)))
            if pk == "hourly":
                names["#exp"] = "expires_at"
                values[":exp"] = _epoch(
                    datetime.strptime(sk, "%Y-%m-%dT%H").replace(tzinfo=now.tzinfo) + HOURLY_KEEP
                )
                expression += " SET #exp = :exp"
            items.append({"Update": self._update(pk, sk, expression, names, values)})
        if findings:
            for finding in findings:
                items.append(
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": self._ser_item(
                                {
                                    "pk": "chain",
                                    "sk": f"problem#{finding.seq:012d}#{finding.kind}",
                                    "seq": finding.seq,
                                    "kind": finding.kind,
                                    "message": finding.message,
                                    "found_at": now.isoformat(),
                                }
                            ),
                        }
                    }
                )
        if chain is not None or findings:
            expected, new = chain if chain is not None else (None, None)
            names = {"#p": "problems"}
            values: dict[str, Any] = {":p": len(findings or [])}
            expression = "ADD #p :p"
            condition = None
            if new is not None and expected is not None:
                names.update({"#s": "seq", "#h": "hash", "#r": "records"})
                values.update({":s": new.seq, ":h": new.hash, ":r": new.records})
                expression += " SET #s = :s, #h = :h, #r = :r"
                if expected.seq == 0:
                    condition = "attribute_not_exists(#s)"
                else:
                    condition = "#s = :old"
                    values[":old"] = expected.seq
            update = self._update("chain", "verified", expression, names, values)
            if condition:
                update["ConditionExpression"] = condition
            items.append({"Update": update})
        if len(items) > MAX_TRANSACTION_ITEMS:
            raise ValueError(
                f"one stream record touches {len(items)} counters (limit {MAX_TRANSACTION_ITEMS})"
            )
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False  # already applied
            raise
        return True

    def put_counters(self, items: dict[tuple[str, str], dict[str, int]]) -> None:
        """Write whole counter items (a rebuild from the tables, or a benchmark's seed)."""
        with self.table.batch_writer() as batch:
            for (pk, sk), values in items.items():
                batch.put_item(Item={"pk": pk, "sk": sk, **values})

    def put_chain_state(self, state: ChainState, problems: int = 0) -> None:
        self.table.put_item(
            Item={
                "pk": "chain",
                "sk": "verified",
                "seq": state.seq,
                "hash": state.hash,
                "records": state.records,
                "problems": problems,
            }
        )

    # -- reads ---------------------------------------------------------------------------------------
    def partition(self, pk: str, *, sk_from: str | None = None, prefix: str | None = None) -> Iterator[dict]:
        condition = Key("pk").eq(pk)
        if sk_from is not None:
            condition = condition & Key("sk").gte(sk_from)
        elif prefix is not None:
            condition = condition & Key("sk").begins_with(prefix)
        kwargs: dict[str, Any] = {"KeyConditionExpression": condition}
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                yield _plain(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def chain_state(self) -> tuple[ChainState, int]:
        item = self.table.get_item(Key={"pk": "chain", "sk": "verified"}, ConsistentRead=True).get("Item")
        if item is None or "seq" not in item:
            return ChainState(), int(item.get("problems", 0)) if item else 0
        return (
            ChainState(seq=int(item["seq"]), hash=str(item["hash"]), records=int(item["records"])),
            int(item.get("problems", 0)),
        )

    def problems(self, limit: int = 20) -> list[dict[str, Any]]:
        page = self.table.query(
            KeyConditionExpression=Key("pk").eq("chain") & Key("sk").begins_with("problem#"),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [_plain(i) for i in page.get("Items", [])]

    # -- helpers ---------------------------------------------------------------------------------------
    def _update(
        self, pk: str, sk: str, expression: str, names: dict[str, str], values: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "TableName": self.table_name,
            "Key": self._ser_item({"pk": pk, "sk": sk}),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": self._ser_item(values),
        }

    @staticmethod
    def _ser_item(values: dict[str, Any]) -> dict[str, Any]:
        """Plain values: the resource's client serialises them (as the audit store relies on too)."""
        return dict(values)


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (int(v) if isinstance(v, Decimal) and v == v.to_integral_value() else v) for k, v in item.items()
    }
