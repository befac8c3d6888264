"""The demo: a small card-game server whose DB calls grow with the size of the table."""
