# Binds get_user by name before callwatch is configured (the "from x import f" case).
from cwsample.storage import get_user


def show(uid: int) -> dict[str, object]:
    return get_user(uid)
