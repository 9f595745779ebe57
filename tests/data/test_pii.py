"""PII scrubbing: each kind is found where it is, and left alone where it only looks similar."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data.pii import card_issuer_ok, luhn_valid, scrub_pii

POSITIVES = [
    ("Write to john.doe+news@example.co.uk today", "Write to <EMAIL> today", "email"),
    ("mail ADMIN@Mail-Server.org.", "mail <EMAIL>.", "email"),
    ("card 4111 1111 1111 1111 ok", "card <CREDIT_CARD> ok", "credit_card"),
    ("card 4111-1111-1111-1111.", "card <CREDIT_CARD>.", "credit_card"),
    ("amex 378282246310005", "amex <CREDIT_CARD>", "credit_card"),
    ("mc 5555555555554444", "mc <CREDIT_CARD>", "credit_card"),
    ("server 192.168.0.1 is down", "server <IP_ADDRESS> is down", "ip_address"),
    ("from 8.8.8.8, then", "from <IP_ADDRESS>, then", "ip_address"),
    ("ip 2001:db8::8a2e:370:7334 here", "ip <IP_ADDRESS> here", "ip_address"),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "full <IP_ADDRESS>", "ip_address"),
    ("link fe80::1 up", "link <IP_ADDRESS> up", "ip_address"),
    ("call (555) 123-4567 now", "call <PHONE> now", "phone"),
    ("call 555-123-4567", "call <PHONE>", "phone"),
    ("call 555.123.4567", "call <PHONE>", "phone"),
    ("ring +44 20 7946 0958 please", "ring <PHONE> please", "phone"),
    ("ring +1 415 555 2671", "ring <PHONE>", "phone"),
    ("office +49 (30) 1234 5678", "office <PHONE>", "phone"),
]

NEGATIVES = [
    "version 1.2.3.4.5 released",
    "ip 999.1.1.1 is not an address",
    "date 2024-01-15 and 15.01.2024",
    "time 12:30:45",
    "card 4111 1111 1111 1112 fails the Luhn check",
    "ISBN 9780306400001 passes Luhn but is a book",
    "order 1234 5678 9012 3452",
    "std::vector and a::b",
    "1,234,567 people",
    "ratio 3.14159 and year 1999",
    "isbn 978-3-16-148410-0",
    "email at example dot com, or user@localhost",
    "HAMLET. Act 3, scene 1",
    "zip 12345-6789",
    "call 555-1234",
]


@pytest.mark.parametrize(("text", "expected", "kind"), POSITIVES)
def test_pii_found_and_tagged(text, expected, kind):
    scrubbed, counts = scrub_pii(text)
    assert scrubbed == expected
    assert counts == {kind: 1}


@pytest.mark.parametrize("text", NEGATIVES)
def test_lookalikes_left_alone(text):
    assert scrub_pii(text) == (text, {})


def test_kinds_can_be_chosen():
    text = "a@b.com 10.0.0.1"
    assert scrub_pii(text, ("ip_address",))[0] == "a@b.com <IP_ADDRESS>"


def test_luhn_and_issuer():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert luhn_valid("4111111111111111") and card_issuer_ok("4111111111111111")
    assert luhn_valid("9780306400001") and not card_issuer_ok("9780306400001")
    assert not card_issuer_ok("411111111111111")  # Visa has no 15-digit numbers


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "word",
                " ",
                "\n",
                "a@b.io",
                "4111 1111 1111 1111",
                "10.0.0.7",
                "fe80::1",
                "(555) 123-4567",
                "555-123-4567",
                "2024-01-15",
                "3.14",
                "::",
                ":",
                "-",
                ".",
                "1",
                "+44 20 7946 0958",
                "x",
            ]
        ),
        max_size=30,
    ).map("".join)
)
def test_scrubbing_is_idempotent_and_leaves_no_email(text):
    once, _ = scrub_pii(text)
    assert scrub_pii(once)[0] == once
    assert "a@b.io" not in once
