# Copies of cwsample.storage's functions: two imports, and a variable of the user's own.
from cwsample.storage import get_user
from cwsample.storage import get_users as fetch_all

ORIGINAL_GET_USER = get_user  # the unwatched function, kept on purpose
