from __future__ import annotations

CALLS: list[str] = []


def get_user(uid: int, *, full: bool = False) -> dict[str, object]:
    CALLS.append("get_user")
    return {"id": uid, "full": full}


def get_users(*uids: int) -> list[dict[str, object]]:
    return [get_user(u) for u in uids]


def _private_helper() -> int:
    return 1


NOT_CALLABLE = 42


class Storage:
    def get_table(self, tid: int) -> int:
        return tid

    def get_players(self, tid: int, n: int) -> list[int]:
        return [self.get_player(i) for i in range(n)]

    def get_player(self, pid: int) -> int:
        return pid

    def put_player(self, pid: int) -> None:
        return None

    @staticmethod
    def get_static(x: int) -> int:
        return x * 2

    @classmethod
    def get_cls(cls, x: int) -> str:
        return f"{cls.__name__}:{x}"

    @property
    def prop(self) -> int:
        return 1

    class Nested:
        def get_deep(self) -> str:
            return "deep"


class SubStorage(Storage):
    pass


class Redis:
    def get(self, key: str) -> str:
        return key

    def set(self, key: str, value: str) -> None:
        return None


def fact(n: int) -> int:
    return 1 if n <= 1 else n * fact(n - 1)


async def aget(key: str) -> str:
    return key


class _Frozen(type):
    def __setattr__(cls, name: str, value: object) -> None:
        raise AttributeError(f"{cls.__name__} is frozen")


class Frozen(metaclass=_Frozen):
    def get(self) -> int:
        return 1


def players_of(table: object, n: int) -> int:
    """A dimension function: gets the handler's own arguments."""
    return n


def path_depth(environ: dict[str, str]) -> int:
    """A dimension function for a WSGI app: gets the environ."""
    return environ["PATH_INFO"].count("/")
