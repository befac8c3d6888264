import callwatch


@callwatch.watch(name="already")
def already() -> int:
    return 1
