"""The demo page at `/` in a real browser: two users chatting, presence, DMs, news, leave."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import HeraldProcess

pytestmark = pytest.mark.browser


def _connect(page: Any, server: HeraldProcess, user: str) -> None:
    from playwright.sync_api import expect

    page.goto(server.http + "/")
    expect(page.locator("#state")).to_have_text("closed")
    page.fill("#user", user)
    page.click("#connect")
    expect(page.locator("#state")).to_have_text("connected")
    expect(page.locator("#state")).to_have_attribute("data-state", "connected")
    expect(page.locator("#connect")).to_have_text("Disconnect")
    expect(page.locator("#app")).to_be_enabled()
    expect(page.locator(f'#who li[data-user="{user}"]')).to_have_count(1)  # ourselves, from `who`


def _line(page: Any, log: str, text: str) -> Any:
    """The lines of #<log> whose whole text is `text`."""
    return page.locator(f"#{log} li").filter(has_text=re.compile(rf"^{re.escape(text)}$"))


def test_demo_page_two_users_chat_and_presence(herald: HeraldProcess, new_page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    alice, bob = new_page("alice"), new_page("bob")
    _connect(alice, herald, "alice")
    _connect(bob, herald, "bob")

    # Presence: each sees the other (bob from alice's `join` frame, alice from bob's `who`).
    bob_at_alice = alice.locator('#who li[data-user="bob"]')
    expect(bob_at_alice).to_have_count(1)
    expect(bob_at_alice).to_have_attribute("data-status", "online")
    expect(bob.locator('#who li[data-user="alice"]')).to_have_count(1)
    expect(alice.locator("#who li.me")).to_have_attribute("data-user", "alice")
    expect(bob.locator("#who li.me")).to_have_attribute("data-user", "bob")

    # Lobby chat: alice's message reaches bob (and comes back to alice), exactly once each.
    alice.fill("#chat-input", "hi bob, welcome to the lobby")
    alice.click("#chat-send")
    expect(_line(bob, "chat-log", "alice: hi bob, welcome to the lobby")).to_have_count(1)
    expect(_line(alice, "chat-log", "alice: hi bob, welcome to the lobby")).to_have_count(1)
    expect(alice.locator("#chat-input")).to_have_value("")

    # Status: bob goes away; alice's list shows it.
    bob.select_option("#status", "away")
    expect(bob_at_alice).to_have_attribute("data-status", "away")
    expect(bob_at_alice).to_have_text("bob — away")
    expect(bob.locator('#who li[data-user="bob"]')).to_have_attribute("data-status", "away")
    expect(bob.locator("#status")).to_have_value("away")

    # Direct message alice -> bob.
    alice.fill("#dm-to", "bob")
    alice.fill("#dm-text", "psst, just for you")
    alice.click("#dm-send")
    expect(_line(bob, "dm-log", "alice: psst, just for you")).to_have_count(1)
    expect(_line(alice, "dm-log", "→ bob: psst, just for you")).to_have_count(1)
    expect(alice.locator("#dm-log li")).to_have_count(1)  # alice is not sent her own DM

    # A backend publish through the server API reaches both news logs.
    status, reply = herald.api("POST", "/api/publish", {"channel": "news:updates", "data": {"text": "hello news"}})
    assert status == 200, reply
    for page in (alice, bob):
        expect(_line(page, "news-log", "hello news")).to_have_count(1)

    shot = tmp_path / "demo-alice.png"
    alice.screenshot(path=str(shot), full_page=True)
    assert shot.is_file() and shot.stat().st_size > 10_000, shot.stat().st_size

    # bob leaves: his page closes, alice gets the `leave` frame.
    bob.close()
    expect(bob_at_alice).to_have_count(0)
    expect(alice.locator("#who li")).to_have_count(1)
    expect(alice.locator("#state")).to_have_text("connected")

    for page in (alice,):
        expect(page.locator("#error")).to_have_text("")
    assert list(new_page.problems) == []
