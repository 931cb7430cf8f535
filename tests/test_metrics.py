"""Metrics computed from a log, checked on small hand-made logs."""

import math

import pandas as pd
import pytest

from omnisim.log import validate
from omnisim.metrics import attribute_conversions, log_metrics, overload_rate
from omnisim.stats import diff_ci, mean_ci, wilson_ci


def log_of(rows):
    cols = ["ts", "user_id", "event", "channel", "message_id", "value"]
    return validate(pd.DataFrame([dict(zip(cols, r)) for r in rows]))


def test_last_touch_attribution_respects_channel_windows():
    log = log_of([
        ("2024-01-01T00:00Z", "a", "sent", "email", "m1", 0.0),
        ("2024-01-01T10:00Z", "a", "sent", "sms", "m2", 0.05),
        ("2024-01-02T20:00Z", "a", "purchase", "web", None, 30.0),   # sms 34 h ago > 24 h; email 44 h ago <= 72 h?
        ("2024-01-01T00:00Z", "b", "sent", "push", "m3", 0.0),
        ("2024-01-03T00:00Z", "b", "purchase", "web", None, 20.0),   # push 48 h ago > 24 h: none
    ])
    att = attribute_conversions(log).set_index("user_id")
    # last touch is the sms (latest send); it is out of its 24 h window, so nothing is attributed
    assert pd.isna(att.loc["a", "message_id"])
    assert pd.isna(att.loc["b", "message_id"])
    att = attribute_conversions(log, {"sms": 48}).set_index("user_id")
    assert att.loc["a", "message_id"] == "m2" and att.loc["a", "msg_channel"] == "sms"


def test_click_through_attribution_counts_only_clicked_messages():
    log = log_of([
        ("2024-01-01T00:00Z", "a", "sent", "email", "m1", 0.0),
        ("2024-01-01T03:00Z", "a", "clicked", "email", "m1", None),
        ("2024-01-01T10:00Z", "a", "sent", "email", "m2", 0.0),       # sent, never clicked
        ("2024-01-03T12:00Z", "a", "purchase", "web", None, 30.0),    # click 57 h ago <= 72 h
        ("2024-01-01T00:00Z", "b", "sent", "email", "m3", 0.0),
        ("2024-01-01T01:00Z", "b", "purchase", "web", None, 20.0),    # no click: send-attributed only
    ])
    sent = attribute_conversions(log).set_index("user_id")
    clicked = attribute_conversions(log, touch="clicked").set_index("user_id")
    assert sent.loc["a", "message_id"] == "m2" and clicked.loc["a", "message_id"] == "m1"
    assert sent.loc["b", "message_id"] == "m3" and pd.isna(clicked.loc["b", "message_id"])
    assert attribute_conversions(log, {"email": 48}, touch="clicked")["message_id"].isna().all()
    m = log_metrics(log)
    assert m["conversions"] == 2 and m["click_conversions"] == 1
    with pytest.raises(ValueError, match="touch"):
        attribute_conversions(log, touch="opened")


def test_overload_uses_local_days():
    # three sends that fall on one UTC day but two local days in Tokyo
    log = log_of([
        ("2024-01-01T10:00Z", "a", "sent", "email", "m1", 0.0),
        ("2024-01-01T14:00Z", "a", "sent", "email", "m2", 0.0),   # 23:00 Tokyo
        ("2024-01-01T16:00Z", "a", "sent", "email", "m3", 0.0),   # 01:00 next day Tokyo
    ])
    utc_users = pd.DataFrame({"user_id": ["a"], "timezone": ["UTC"]})
    tokyo = pd.DataFrame({"user_id": ["a"], "timezone": ["Asia/Tokyo"]})
    assert overload_rate(log, utc_users, 1, 2) == pytest.approx(0.5)
    assert overload_rate(log, tokyo, 1, 2) == 0.0


def test_log_metrics_counts_and_money():
    log = log_of([
        ("2024-01-01T00:00Z", "a", "sent", "sms", "m1", 0.05),
        ("2024-01-01T00:05Z", "a", "opened", "sms", "m1", None),
        ("2024-01-01T00:06Z", "a", "clicked", "sms", "m1", None),
        ("2024-01-01T01:00Z", "a", "purchase", "web", None, 40.0),
        ("2024-01-01T00:00Z", "b", "sent", "email", "m2", 0.0),
        ("2024-01-02T00:00Z", "b", "unsubscribed", "email", "m2", None),
    ])
    users = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "timezone": ["UTC"] * 4})
    m = log_metrics(log, users, days=7, holdout_users={"c", "d"})
    assert m["messages"] == 2 and m["messages_by_channel"] == {"email": 1, "sms": 1, "push": 0}
    assert m["messages_per_user"] == 0.5
    assert m["open_rate"] == 0.5 and m["click_rate"] == 0.5
    assert m["conversions"] == 1 and m["conversions_by_channel"]["sms"] == 1
    assert m["revenue"] == 40.0 and m["cost"] == pytest.approx(0.05)
    assert m["revenue_minus_cost"] == pytest.approx(39.95)
    assert m["unsubscribes"] == 1
    # treated a, b: 0.5 purchases per user; holdout c, d: 0 → 1 incremental purchase
    assert m["incremental_conversions"] == pytest.approx(1.0)


def test_mean_ci_covers_true_mean_at_nominal_rate():
    import numpy as np

    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(2000):
        _, lo, hi = mean_ci(rng.normal(3.0, 2.0, size=5))
        hits += lo <= 3.0 <= hi
    # nominal 95 %; binomial sd over 2000 trials ≈ 0.5 %
    assert 0.93 < hits / 2000 < 0.97


def test_wilson_and_diff_ci():
    p, lo, hi = wilson_ci(20, 100)
    assert p == 0.2 and lo == pytest.approx(0.1333, abs=1e-3) and hi == pytest.approx(0.2888, abs=1e-3)
    assert all(math.isnan(x) for x in wilson_ci(0, 0))
    d, lo, hi = diff_ci([1, 0, 1, 1], [0, 0, 1, 0])
    assert d == 0.5 and lo < d < hi


def test_simultaneous_sends_credit_the_greatest_message_id_whatever_else_the_log_holds():
    rows = [("2024-01-01T09:00Z", "a", "sent", "email", "a-m1", 0.0),
            ("2024-01-01T09:00Z", "a", "sent", "sms", "a-m2", 0.05),
            ("2024-01-01T09:00Z", "a", "sent", "push", "a-m3", 0.0),
            ("2024-01-01T12:00Z", "a", "purchase", "web", None, 30.0)]
    others = [(f"2024-01-01T0{h}:00Z", f"u{i}", "sent", ch, f"u{i}-m1", 0.0)
              for i, (h, ch) in enumerate([(9, "email"), (9, "sms"), (8, "push")] * 40)]
    for log in (log_of(rows), log_of(others + rows), log_of(others[::-1][:60] + rows + others[:60])):
        att = attribute_conversions(log).set_index("user_id")
        assert att.loc["a", "message_id"] == "a-m3"  # ties at one instant: the greatest id
