import math, sqlite3, sys

ORIGINAL = "/tests/support.db"          # the verifier's own copy of the starting database
FINAL = "/var/lib/support/support.db"
FREE = {"refunds": {"id", "reason", "created_at"}, "tickets": {"reply"}}


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def tables(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {n: {r["id"]: dict(r) for r in conn.execute(f"SELECT * FROM {n}")} for n in names}


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), abs_tol=0.005)
        except (TypeError, ValueError):
            return False
    return a == b


def matches(value, want):
    """want: a value, or {"any": [values]}."""
    if isinstance(want, dict) and "any" in want:
        return any(same(value, w) for w in want["any"])
    return same(value, want)


def check(expect):
    """expect: {"update": {table: {id: {col: want}}}, "insert": {table: [{col: want}]},
    "reply_contains": {ticket_id: [text]}}: everything else must be as it was."""
    try:
        before, after = tables(ORIGINAL), tables(FINAL)
    except sqlite3.Error as exc:
        fail(f"cannot read the database: {exc}")
    if set(before) != set(after):
        fail(f"tables changed: {sorted(set(before) ^ set(after))}")
    updates = {t: {int(k): v for k, v in rows.items()} for t, rows in expect.get("update", {}).items()}
    for table, rows in before.items():
        free = FREE.get(table, set())
        for id_, old in rows.items():
            new = after[table].get(id_)
            if new is None:
                fail(f"{table} {id_} was deleted")
            want = updates.get(table, {}).get(id_, {})
            for col, value in new.items():
                if col in want:
                    if not matches(value, want[col]):
                        fail(f"{table} {id_}: {col} is {value!r}, expected {want[col]!r}")
                elif col in free and (table, id_) in touched(expect):
                    continue
                elif not same(value, old[col]):
                    fail(f"{table} {id_}: {col} changed from {old[col]!r} to {value!r}")
        added = [r for i, r in after[table].items() if i not in rows]
        wanted = expect.get("insert", {}).get(table, [])
        if len(added) != len(wanted):
            fail(f"{table}: {len(added)} new rows, expected {len(wanted)}")
        for row, want in zip(sorted(added, key=lambda r: r["id"]), wanted):
            for col, value in want.items():
                if not matches(row.get(col), value):
                    fail(f"new {table} row: {col} is {row.get(col)!r}, expected {value!r}")
            if table in FREE and "reason" in row and not str(row["reason"]).strip():
                fail(f"new {table} row without a reason")
    for tid, texts in expect.get("reply_contains", {}).items():
        reply = after["tickets"][int(tid)]["reply"] or ""
        for text in texts:
            if text.lower() not in reply.lower():
                fail(f"ticket {tid}'s reply does not mention {text!r}")
    print("the database is as it should be")


def touched(expect):
    return {(t, int(i)) for t, rows in expect.get("update", {}).items() for i in rows}
