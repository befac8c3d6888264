"""The demo's handlers: login, join_table, deal, play, leave.

``join_table``, ``deal`` and ``play`` touch every player at the table, so their DB and
cache calls per request grow with the number of players -- the story callwatch tells.
"""

from __future__ import annotations

import random

import callwatch

from .cache import Cache
from .db import Database

SUITS = "SHDC"
RANKS = "23456789TJQKA"


class HandRecord:
    """One dealt hand, kept for a replay feature that never shipped."""

    def __init__(self, user_id: int, hand: str) -> None:
        self.user_id = user_id
        self.hand = hand


#: The demo's honest leak: every deal at a full table (7 players) keeps its hands here, and
#: nothing ever trims it.  ``memory:`` shows it (``callwatch.demo.leak``).
HISTORY: list[HandRecord] = []


class Server:
    def __init__(self, seed: int = 0) -> None:
        self.db = Database()
        self.cache = Cache()
        self.rng = random.Random(seed)


@callwatch.handler("login")
def login(server: Server, user_id: int) -> tuple[object, ...] | None:
    session: tuple[object, ...] | None = server.cache.get(f"session:{user_id}")
    if session is None:
        session = server.db.get_user(user_id)
        server.cache.set(f"session:{user_id}", session, ttl=2.0)
    return session


@callwatch.handler("join_table")
def join_table(server: Server, user_id: int, table_id: int) -> int:
    server.db.get_table(table_id)
    for other in server.db.list_seats(table_id):
        server.db.get_player(other)  # show the newcomer who is already seated
    server.db.save_seat(table_id, user_id)
    return table_id


@callwatch.handler("deal")
def deal(server: Server, table_id: int) -> dict[int, str]:
    server.db.get_table(table_id)
    deck = [r + s for r in RANKS for s in SUITS]
    server.rng.shuffle(deck)
    hands: dict[int, str] = {}
    seats = server.db.list_seats(table_id)
    callwatch.dimension("players", len(seats))  # charts split by table size: deal.by.players.7
    for i, user_id in enumerate(seats):
        server.db.get_player(user_id)
        hands[user_id] = "".join(deck[2 * i: 2 * i + 2])
        server.db.save_hand(user_id, hands[user_id])
        server.cache.set(f"hand:{user_id}", hands[user_id])
    if len(seats) >= 7:
        HISTORY.extend(HandRecord(uid, hand) for uid, hand in hands.items())
    return hands


@callwatch.handler("play")
def play(server: Server, user_id: int, table_id: int) -> str:
    table = server.cache.get(f"table:{table_id}")
    if table is None:
        table = server.db.get_table(table_id)
        server.cache.set(f"table:{table_id}", table, ttl=1.0)
    what = server.rng.choice(("check", "call", "raise", "fold"))
    server.db.save_action(table_id, user_id, what)
    for other in server.db.list_seats(table_id):
        server.cache.get(f"hand:{other}")  # notify every player at the table
    return what


@callwatch.handler("leave")
def leave(server: Server, user_id: int, table_id: int) -> None:
    server.db.delete_seat(table_id, user_id)
    server.cache.delete(f"hand:{user_id}")
