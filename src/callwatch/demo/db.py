"""The demo's DB layer, on a real sqlite database (one connection per server)."""

from __future__ import annotations

import sqlite3
from typing import Any


class Database:
    def __init__(self, path: str = ":memory:") -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT, chips INTEGER);
            CREATE TABLE IF NOT EXISTS game_tables (id INTEGER PRIMARY KEY, name TEXT, stake INTEGER);
            CREATE TABLE IF NOT EXISTS seats (table_id INTEGER, user_id INTEGER, PRIMARY KEY (table_id, user_id));
            CREATE TABLE IF NOT EXISTS hands (user_id INTEGER PRIMARY KEY, cards TEXT);
            CREATE TABLE IF NOT EXISTS actions (id INTEGER PRIMARY KEY, table_id INTEGER, user_id INTEGER, what TEXT);
            """
        )

    def add_user(self, user_id: int, name: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO users VALUES (?, ?, 1000)", (user_id, name))

    def add_table(self, table_id: int, name: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO game_tables VALUES (?, ?, 10)", (table_id, name))

    def get_user(self, user_id: int) -> tuple[Any, ...] | None:
        row = self.conn.execute("SELECT id, name, chips FROM users WHERE id = ?", (user_id,)).fetchone()
        return tuple(row) if row else None

    def get_player(self, user_id: int) -> tuple[Any, ...] | None:
        # The per-player read that multiplies with the table size (an N+1 query).
        row = self.conn.execute(
            "SELECT u.id, u.name, u.chips, h.cards FROM users u LEFT JOIN hands h ON h.user_id = u.id "
            "WHERE u.id = ?", (user_id,)).fetchone()
        return tuple(row) if row else None

    def get_table(self, table_id: int) -> tuple[Any, ...] | None:
        row = self.conn.execute("SELECT id, name, stake FROM game_tables WHERE id = ?", (table_id,)).fetchone()
        return tuple(row) if row else None

    def list_seats(self, table_id: int) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT user_id FROM seats WHERE table_id = ? ORDER BY user_id", (table_id,))]

    def save_seat(self, table_id: int, user_id: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO seats VALUES (?, ?)", (table_id, user_id))

    def save_hand(self, user_id: int, cards: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO hands VALUES (?, ?)", (user_id, cards))

    def save_action(self, table_id: int, user_id: int, what: str) -> None:
        self.conn.execute("INSERT INTO actions (table_id, user_id, what) VALUES (?, ?, ?)",
                          (table_id, user_id, what))

    def delete_seat(self, table_id: int, user_id: int) -> None:
        self.conn.execute("DELETE FROM seats WHERE table_id = ? AND user_id = ?", (table_id, user_id))
