# A module that ends the process when imported (a script someone pointed a target at).
import sys

sys.exit(3)
