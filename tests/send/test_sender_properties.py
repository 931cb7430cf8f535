"""Property-based: over random event streams, the sender never messages a user without
consent for the channel, after an unsubscribe, during quiet hours, or past a cap."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sender_support import T0, add_user, ev

from omnisim.policies.artifact import export_policy
from omnisim.policies.pressure import default_rules
from omnisim.policies.violations import count_violations
from omnisim.send import scheduler as sch
from omnisim.send.clock import ManualClock
from omnisim.send.export import log_frame
from omnisim.send.service import DecisionService, LoadedPolicy
from omnisim.send.store import Store

_TMP = Path(tempfile.mkdtemp(prefix="omnisim-prop-"))
POLICY = LoadedPolicy.from_file(export_policy("journeys+pressure", _TMP / "policy.json"))
TZS = ("UTC", "Europe/Paris", "America/Los_Angeles", "Asia/Tokyo")
KINDS = ("signup", "visit", "product_view", "cart_add", "cart_abandon", "purchase",
         "unsubscribed", "inactivity")
RULES = default_rules()

user_st = st.tuples(st.sampled_from(TZS), st.fixed_dictionaries(
    {ch: st.booleans() for ch in ("email", "sms", "push")}))
event_st = st.tuples(st.integers(0, 2), st.sampled_from(KINDS), st.integers(0, 3 * 86400),
                     st.sampled_from(("email", "sms", "push")))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(users=st.lists(user_st, min_size=3, max_size=3),
       events=st.lists(event_st, min_size=1, max_size=25))
def test_never_without_consent_after_unsubscribe_in_quiet_hours_or_past_a_cap(users, events):
    path = Path(tempfile.mkdtemp(dir=_TMP)) / "p.db"
    clock = ManualClock(T0)
    svc = DecisionService(Store.open(f"sqlite:///{path}"), POLICY, clock, late_tolerance=None)
    for i, (tz, consent) in enumerate(users):
        add_user(svc.store, f"u{i}", tz, tuple(ch for ch, ok in consent.items() if ok))
    stream = sorted(((T0 + timedelta(seconds=s), u, k, ch) for u, k, s, ch in events),
                    key=lambda e: e[0])
    for n, (ts, u, kind, ch) in enumerate(stream):
        clock.set(ts)
        svc.ingest([ev(f"k{n}", f"u{u}", kind, ts, channel=ch if kind == "unsubscribed" else None)])
    end = T0 + timedelta(days=8)
    while (nxt := sch.next_due(svc.store)) is not None and nxt <= end:
        clock.set(nxt)
        svc.run_due()
    try:
        log = log_frame(svc.store)
    finally:
        svc.store.close()
    sent = log[log["event"] == "sent"]
    for row in sent.itertuples():
        i = int(row.user_id[1:])
        tz, consent = users[i]
        assert consent[row.channel], f"{row.message_id}: no consent for {row.channel}"
        unsub = log[(log["user_id"] == row.user_id) & (log["event"] == "unsubscribed")
                    & (log["channel"] == row.channel) & (log["ts"] <= row.ts)]
        assert unsub.empty, f"{row.message_id}: sent on {row.channel} after unsubscribing"
        local = row.ts.tz_convert(ZoneInfo(tz))
        hour = local.hour + local.minute / 60
        assert 8 <= hour < 21, f"{row.message_id}: sent at {local} local, in quiet hours"
    table = pd.DataFrame({"user_id": [f"u{i}" for i in range(3)], "timezone": [u[0] for u in users]})
    assert count_violations(log, table, RULES)["cap_violations"] == 0
